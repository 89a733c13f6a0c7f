"""The sandbox's own store: Twilio's side of every message, kept apart from the app's data.

The sandbox imitates another company's service, so its state lives in a SQLite file of its own
(SANDBOX_DB_PATH, by default ``sandbox.db`` beside DB_PATH), also when the app itself runs on
PostgreSQL: the app's database holds no sandbox table, and a deployment on real Twilio never
opens this file. Several threads (requests, status callbacks) and several processes (gunicorn's,
or two servers sharing a data folder) write it, so it runs in WAL mode, waits for the write lock
(busy timeout) instead of failing, and starts every write transaction with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

BUSY_TIMEOUT_SECONDS = 30  # how long a writer waits for another thread's or process's turn


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp kept as naive UTC text by SQLite and read back timezone-aware."""

    impl = DateTime()
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store an aware time as naive UTC (a naive one is taken as UTC already)."""
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read a stored time back as aware UTC."""
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """The sandbox's declarative base: its own MetaData, never the app's."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class SandboxMessage(Base):
    """The sandbox's record of a message, in Twilio's shape."""

    __tablename__ = "sandbox_messages"
    __table_args__ = (Index("ix_sandbox_messages_created", "date_created"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(34), unique=True)
    account_sid: Mapped[str] = mapped_column(String(34))
    messaging_service_sid: Mapped[str | None] = mapped_column(String(34))
    from_number: Mapped[str | None] = mapped_column(String(34))
    to_number: Mapped[str] = mapped_column(String(34), index=True)
    body: Mapped[str] = mapped_column(Text, default="")
    media_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(24))
    direction: Mapped[str] = mapped_column(String(16))
    num_segments: Mapped[int] = mapped_column(Integer, default=1)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    status_callback: Mapped[str | None] = mapped_column(Text)
    content_sid: Mapped[str | None] = mapped_column(String(34))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    date_sent: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SandboxOptOut(Base):
    """Numbers that texted STOP to the sandbox: Twilio's own opt-out list, imitated."""

    __tablename__ = "sandbox_opt_outs"
    __table_args__ = (UniqueConstraint("sender", "number", name="uq_sandbox_opt_outs_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(34))
    number: Mapped[str] = mapped_column(String(34))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SandboxFault(Base):
    """A fault the sandbox injects into its next create calls (tests use it for 429 and 500)."""

    __tablename__ = "sandbox_faults"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status_code: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[int | None] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer, default=1)


class SandboxStore:
    """The sandbox's SQLite file: an engine, write sessions and read sessions.

    Nothing is opened until the first session. The tables are then made with `create_all`, not
    migrations: this is an emulator's scratch state, not data anyone keeps, so when its shape
    changes the file can simply be deleted and is made again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        # Reads begin a deferred transaction: they never wait for a writer.
        self._reader = sessionmaker(
            self.engine.execution_options(sandbox_begin="BEGIN"), expire_on_commit=False
        )
        self._ready = False
        self._ready_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a write session: one transaction, committed on success, rolled back on error."""
        self.create_tables()
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a read-only session that never waits for the write lock."""
        self.create_tables()
        with self._reader() as session:
            yield session

    def create_tables(self) -> None:
        """Make the folder, the file and its tables, once per store (safe across processes)."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One BEGIN IMMEDIATE transaction: a process that finds the tables missing creates
            # them while the others wait, so two never both try.
            with self.engine.begin() as conn:
                Base.metadata.create_all(conn)
            self._ready = True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    """Set up each new SQLite connection (SQLAlchemy's documented pysqlite recipe)."""
    dbapi_conn.isolation_level = None  # transactions are begun by _on_begin, not the driver
    dbapi_conn.execute("PRAGMA journal_mode=WAL")  # readers run beside a writer
    # In WAL mode NORMAL loses no commit when a process dies; only a power cut may lose the
    # last ones, which for an emulator's state is no loss.
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def _on_begin(conn: Connection) -> None:
    """Begin each write transaction IMMEDIATE: the write lock first, so no two writers that
    read first can deadlock upgrading to it (a read session asks for a plain BEGIN)."""
    conn.exec_driver_sql(conn.get_execution_options().get("sandbox_begin", "BEGIN IMMEDIATE"))
