"""Authentication for every request: protected unless a view is deliberately marked public.

Panel users log in with a session; API clients send ``Authorization: Bearer <token>``. A
session-authenticated request that changes state must carry the session's CSRF token (header
``X-CSRF-Token`` or form field ``csrf_token``); bearer requests carry no cookies and need none.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Flask, g, jsonify, redirect, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Request
from flask.wrappers import Response as FlaskResponse
from flask_babel import gettext
from itsdangerous import URLSafeTimedSerializer
from werkzeug.wrappers import Response

from twilio_chat.accounts.users import Identity, load_identity, verify_token
from twilio_chat.db.engine import get_db

F = TypeVar("F", bound=Callable[..., Any])
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_IDLE_SECONDS = 30 * 60
SESSION_MAX_SECONDS = 8 * 3600
STATIC_ENDPOINTS = ("static", "bootstrap.static", "api_docs.static")  # assets: no data


def public(reason: str) -> Callable[[F], F]:
    """Mark a view as reachable without login; `reason` says what protects it instead."""

    def mark(view: F) -> F:
        view.public_reason = reason  # type: ignore[attr-defined]
        return view

    return mark


def requires_admin(view: F) -> F:
    """Mark a view as for admins only (and, with a token, the admin scope)."""
    view.required_scope = "admin"  # type: ignore[attr-defined]
    view.admin_only = True  # type: ignore[attr-defined]
    return view


def requires_scope(scope: str) -> Callable[[F], F]:
    """Mark a view as needing a token scope (read, send or admin)."""

    def mark(view: F) -> F:
        view.required_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok() -> bool:
    """Tell whether the request carries this session's CSRF token."""
    expected = session.get("csrf")
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


def _api_error(status: int, code: str, message: str) -> Response:
    """Refuse an API call; `message` is already in the request's language."""
    answer = jsonify({"error": {"code": code, "message": message, "field": None}})
    answer.status_code = status
    if status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="twilio-chat"'
    return answer


def start_session() -> None:
    """Stamp a new login: the idle and absolute time-outs count from now."""
    now = int(time.time())
    session["login_at"] = now
    session["seen_at"] = now


def _session_alive() -> bool:
    """Check the idle (30 min) and absolute (8 h) time-outs; refresh the idle clock."""
    now = int(time.time())
    login_at, seen_at = session.get("login_at"), session.get("seen_at")
    if not isinstance(login_at, int) or not isinstance(seen_at, int):
        return False
    if now - seen_at > SESSION_IDLE_SECONDS or now - login_at > SESSION_MAX_SECONDS:
        return False
    if now - seen_at >= 30:  # rewriting the cookie on every request is not needed
        session["seen_at"] = now
    return True


def _identify() -> Identity | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return verify_token(get_db(), header[7:].strip())
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        if not _session_alive():
            session.clear()
            return None
        return load_identity(get_db(), user_id)
    return None


def _guard() -> Response | None:
    if request.endpoint in STATIC_ENDPOINTS:
        return None  # CSS, JS and images: no data
    view = _current_view()
    if view is not None and getattr(view, "public_reason", None):
        return None
    is_api = request.path.startswith("/api/") or request.path == "/metrics"
    identity = _identify()
    if identity is None:
        if is_api or request.method != "GET":
            return _api_error(401, "unauthorized", gettext("Log in or send a valid bearer token."))
        return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}")
    if identity.via == "session" and request.method in UNSAFE_METHODS and not csrf_ok():
        return _api_error(
            403, "csrf", gettext("Missing or wrong CSRF token (X-CSRF-Token header).")
        )
    scope = getattr(view, "required_scope", None)
    if scope and scope not in identity.scopes:
        return _api_error(
            403, "forbidden", gettext("This token lacks the %(scope)s scope.", scope=scope)
        )
    if getattr(view, "admin_only", False) and not identity.is_admin:
        return _api_error(403, "forbidden", gettext("Only admins can see this."))
    g.identity = identity
    return None


def _current_view() -> Callable[..., Any] | None:
    from flask import current_app

    if request.endpoint is None:
        return None
    return current_app.view_functions.get(request.endpoint)


def current_identity() -> Identity:
    """Return the authenticated identity of this request."""
    identity: Identity = g.identity
    return identity


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie, its serializer built once per key instead of per request.

    Flask builds a new serializer (and test-serializes an empty dict) for every request, even
    one that carries no cookie, such as each of Twilio's webhooks. A request with no Cookie
    header at all gets its empty session without parsing cookies, and a session nobody looked
    at is not saved: Flask would work out the cookie's seven attributes only to write nothing.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Return the request's session: an empty one at once when it sent no cookie."""
        if "HTTP_COOKIE" not in request.environ and self.get_signing_serializer(app) is not None:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: FlaskResponse) -> None:
        """Set, refresh or delete the cookie; nothing when the session was never touched."""
        if not session and not session.modified and not session.accessed:
            return  # Flask's own answer here: no cookie, no Vary header
        super().save_session(app, session, response)

    def __init__(self) -> None:
        self._built: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """Return the serializer for the app's current keys, built on first use."""
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        built = self._built
        if built is None or built[0] != keys:
            built = self._built = (keys, super().get_signing_serializer(app))
        return built[1]


def init_app(app: Flask) -> None:
    """Install the guard that protects every route not marked public, and the session cookie."""
    app.session_interface = SessionCookies()
    app.before_request(_guard)
