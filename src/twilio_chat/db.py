"""The database engine and sessions; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """An engine and session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        # Reads begin a deferred transaction: they never wait for the write lock.
        self._reader = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a write session: one transaction, committed on success, rolled back on error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a read-only session that never takes the write lock."""
        # Closing (not rolling back) ends the transaction and keeps loaded objects readable.
        with self._reader() as session:
            yield session

    def ensure_directory(self) -> None:
        """Create the folder that holds the SQLite file, if any."""
        database = self.url.database or ""
        if self.is_sqlite and database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite safe for many threads and processes.

    WAL lets readers run beside a writer; write transactions start with BEGIN IMMEDIATE so two
    writers never both hold a read lock and deadlock when upgrading to a write lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def init_app(app: Flask, settings: Settings) -> None:
    """Attach a Database for the settings' URL to the app (no connection is opened)."""
    app.extensions["db"] = Database(settings.sqlalchemy_url)


def get_db(app: Flask | None = None) -> Database:
    """Return the app's Database."""
    target = app or current_app
    db: Database = target.extensions["db"]
    return db
