"""Users, argon2 password hashes and API bearer tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from twilio_chat.db.engine import Database, DriverStatement, per_driver
from twilio_chat.db.models import ApiToken, User, utcnow
from twilio_chat.errors import InvalidInput, NotFound

TOKEN_PREFIX = "tc_"  # noqa: S105 - a marker, not a secret
SCOPES = ("read", "send", "admin")
_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Identity:
    """Who is making a request."""

    user_id: int
    username: str
    is_admin: bool
    scopes: frozenset[str]
    via: str  # session | token


def validate_username(username: str) -> str:
    """Check a username: 1-64 visible characters without spaces."""
    name = username.strip()
    if not name or len(name) > 64 or any(ch.isspace() for ch in name):
        raise InvalidInput("username must be 1-64 characters without spaces", field="username")
    return name


def validate_password(password: str) -> None:
    """Check a password is at least 8 characters."""
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters", field="password")


def create_user(db: Database, username: str, password: str, is_admin: bool = False) -> User:
    """Create a user with an argon2 password hash."""
    name = validate_username(username)
    validate_password(password)
    try:
        with db.session() as session:
            user = User(username=name, password_hash=_hasher.hash(password), is_admin=is_admin)
            session.add(user)
            session.flush()
            return user
    except IntegrityError:
        raise InvalidInput(f"user {name!r} exists already", field="username") from None


def authenticate(db: Database, username: str, password: str) -> Identity | None:
    """Return the identity for a correct username and password, else None."""
    with db.read() as session:
        user = session.scalar(select(User).where(User.username == username.strip()))
        stored = user.password_hash if user else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(stored):
        with db.session() as session:
            fresh = session.get_one(User, user.id)
            fresh.password_hash = _hasher.hash(password)
    return Identity(user.id, user.username, user.is_admin, frozenset(SCOPES), "session")


def load_identity(db: Database, user_id: int) -> Identity | None:
    """Return the identity of a logged-in user id, or None if the user is gone."""
    with db.read() as session:
        conn = session.connection()
        rows = _user_by_id(conn.dialect).run(conn, {"id": user_id})
    if not rows:
        return None
    found, username, is_admin = rows[0]
    return Identity(found, username, bool(is_admin), frozenset(SCOPES), "session")


@per_driver
def _user_by_id(dialect: Dialect) -> DriverStatement:
    """Build the read of a session's user (once per database driver).

    Every panel request makes it, each open tab's live poll twice a second among them: on
    the driver's cursor (`DriverStatement`) it costs a fraction of the ORM's `session.get`.
    """
    u = cast(Table, User.__table__).c
    query = select(u.id, u.username, u.is_admin).where(u.id == bindparam("id"))
    return DriverStatement(query, dialect, [])


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    db: Database, username: str, name: str = "", scopes: tuple[str, ...] = SCOPES
) -> tuple[ApiToken, str]:
    """Create an API token for a user; return the row and the token (shown once, stored hashed)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidInput(f"scopes must be some of {', '.join(SCOPES)}", field="scopes")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no user named {username!r}", field="user")
        row = ApiToken(
            user_id=user.id,
            name=name,
            token_hash=_hash_token(token),
            prefix=token[:10],
            scopes=" ".join(scopes),
        )
        session.add(row)
        session.flush()
        return row, token


def verify_token(db: Database, token: str) -> Identity | None:
    """Return the identity behind a bearer token, or None if unknown or revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = _hash_token(token)
    query = (  # the token and its user in one statement: every API call asks
        select(
            ApiToken.token_hash,
            ApiToken.revoked_at,
            ApiToken.scopes,
            User.id,
            User.username,
            User.is_admin,
        )
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest)
    )
    with db.read() as session:
        row = session.execute(query).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    return Identity(row.id, row.username, row.is_admin, frozenset(row.scopes.split()), "token")


def revoke_token(db: Database, token_id: int) -> None:
    """Revoke a token so it no longer authenticates."""
    with db.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"no token with id {token_id}", field="id")
        row.revoked_at = utcnow()


def ensure_admin(db: Database, username: str, password: str | None) -> str | None:
    """Create the first admin if there are no users; return a generated password to print once."""
    with db.read() as session:
        if session.scalar(select(func.count(User.id))):
            return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    try:
        create_user(db, username, password, is_admin=True)
    except InvalidInput as exc:
        if exc.field == "username" and "exists" in exc.message:
            return None  # another process made it first
        raise
    return generated
