"""Typed SQLAlchemy 2.0 models: one schema for SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Integer primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return a time as an aware UTC datetime (a naive one is taken as UTC, as it is stored)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store aware datetimes as UTC."""
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read timestamps back as aware UTC datetimes."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base with a naming convention for constraints."""

    metadata = MetaData(naming_convention=NAMING)


class Message(Base):
    """One SMS/MMS, inbound or outbound."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_contact_created", "contact_number", "created_at"),
        # Threads and filtered lists, newest first: the order comes from the index.
        Index("ix_messages_contact_id", "contact_number", "id"),
        Index("ix_messages_direction_id", "direction", "id"),
        # The dashboard's counts read this index alone.
        Index("ix_messages_direction_created_status", "direction", "created_at", "status"),
        Index("ix_messages_created", "created_at"),
        # Text search (ILIKE '%word%') on PostgreSQL; SQLite has the FTS5 table messages_fts
        # instead (migration 0004), which SQLAlchemy does not model.
        Index(
            "ix_messages_body_trgm",
            "body",
            postgresql_using="gin",
            postgresql_ops={"body": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        # An id is never handed out twice (migration 0006): the search index counts every id
        # up to search_index.indexed_through as indexed. PostgreSQL's sequences never reuse one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str | None] = mapped_column(String(34), unique=True)
    account_sid: Mapped[str | None] = mapped_column(String(34))
    direction: Mapped[str] = mapped_column(String(16))  # inbound | outbound
    our_number: Mapped[str | None] = mapped_column(String(32))
    messaging_service_sid: Mapped[str | None] = mapped_column(String(34))
    contact_number: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    num_segments: Mapped[int] = mapped_column(Integer, default=1)
    # What produced an outbound message: api, panel, cli, auto_reply, ai, engine.
    source: Mapped[str | None] = mapped_column(String(16))
    # The inbound sid this message answers automatically; unique: one reply per inbound, ever.
    reply_to_sid: Mapped[str | None] = mapped_column(String(34), unique=True)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[StatusEvent]] = relationship(
        back_populates="message", order_by="StatusEvent.id", viewonly=True
    )


class StatusEvent(Base):
    """One status callback from Twilio, kept for the message's timeline."""

    __tablename__ = "status_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    message_sid: Mapped[str] = mapped_column(String(34), index=True)
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    message: Mapped[Message | None] = relationship(back_populates="events")


class Contact(Base):
    """A person we text with: a name, and the conversation's summary and state."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_last_message_id", "last_message_id"),
        # The conversations with unread texts (the tab's title counts them): few of many.
        Index(
            "ix_contacts_unread",
            "unread_count",
            sqlite_where=text("unread_count > 0"),
            postgresql_where=text("unread_count > 0"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str | None] = mapped_column(String(120))
    last_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Kept up to date in the transaction that writes each message, so listing is one index scan.
    last_message_id: Mapped[int | None] = mapped_column(BigId)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unread_count: Mapped[int] = mapped_column(Integer, default=0)
    replies_paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OptOut(Base):
    """The opt-out ledger: per (our sender, their number), opted out or back in, when and why."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("sender", "number", name="uq_opt_outs_sender_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Our number (E.164) or Messaging Service SID.
    sender: Mapped[str] = mapped_column(String(34))
    number: Mapped[str] = mapped_column(String(32), index=True)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))  # e.g. keyword STOP, twilio 21610
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A unit of background work, claimed by a worker with a lease."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "run_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # queued | running | done | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    unique_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AutoReplyConfig(Base):
    """The fixed auto-reply (a single row, id 1)."""

    __tablename__ = "auto_reply_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(Text, default="")
    enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # At most one auto-reply per conversation within this many hours (0: to every text).
    window_hours: Mapped[int] = mapped_column(Integer, default=12, server_default="12")
    # Answer only outside business_hours: {"timezone": "Europe/Warsaw",
    # "days": {"mon": {"start": "09:00", "end": "17:00"}, ...}} (a day left out: closed).
    outside_hours_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    business_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AIConfig(Base):
    """The AI reply settings (a single row, id 1); the key is stored encrypted."""

    __tablename__ = "ai_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(100))
    temperature: Mapped[float] = mapped_column(Float)
    system_prompt: Mapped[str] = mapped_column(Text)
    target_number: Mapped[str | None] = mapped_column(String(32))
    history_limit: Mapped[int] = mapped_column(Integer, default=20)
    max_segments: Mapped[int] = mapped_column(Integer, default=3)
    base_url: Mapped[str | None] = mapped_column(String(500))
    fallback_text: Mapped[str | None] = mapped_column(Text)
    # False while the values come from the environment; True after a save in panel or API.
    saved: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    """A person who can log in to the panel."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """A bearer token for the REST API: stored as a SHA-256 hash, shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(100), default="read send admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")


class ReplyMode(Base):
    """Which mode answers now and since when (a single row, id 1); see replies.config.

    `mode` is off, auto_reply, ai or a chat engine's name (echo, keywords, …). `chosen`: an
    operator chose it (panel or API); until then the mode follows the settings. Sync answers a
    message found late only if it is newer than `since`.
    """

    __tablename__ = "reply_mode"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    chosen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SearchIndex(Base):
    """How far SQLite's full-text index of message bodies has got (a single row, id 1).

    Messages with an id up to `indexed_through` are in `messages_fts`; newer ones are indexed a
    batch at a time by the worker (search.py), off the webhook's path, and searched directly
    meanwhile. PostgreSQL indexes every row as it is written (pg_trgm) and does not use it.
    """

    __tablename__ = "search_index"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indexed_through: Mapped[int] = mapped_column(BigId, default=0)


class WorkerHeartbeat(Base):
    """The last sign of life of each worker (readiness checks that one is running)."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class LoginAttempt(Base):
    """A failed login, kept briefly to throttle guessing (per IP and per account)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_ip_at", "ip", "at"),
        Index("ix_login_attempts_username_at", "username", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ip: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """Who did what, when: config changes, sends, redactions, deletions, logins."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))  # username, or cli / system
    action: Mapped[str] = mapped_column(String(40))  # e.g. login, login_failed, send, redact
    target: Mapped[str | None] = mapped_column(String(120))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
