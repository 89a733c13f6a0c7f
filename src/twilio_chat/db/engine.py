"""The database engine and sessions; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE."""

from __future__ import annotations

import fcntl
import functools
import itertools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from twilio_chat.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# In WAL mode with synchronous=NORMAL a commit is in the WAL file, safe from a crash of the
# app but not yet from a power cut. A durable session (`session(durable=True)`: an inbound
# text, which exists nowhere else once Twilio has our 200) fsyncs the WAL after its commit,
# once the write lock is released: other writers go on meanwhile, and one fsync carries every
# commit made before it to disk.
SQLITE_SYNCHRONOUS = "NORMAL"


class Database:
    """An engine and session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        database = self.url.database or ""
        file_backed = self.is_sqlite and database not in ("", ":memory:")
        self._lock_path: str | None = f"{database}-writers.lock" if file_backed else None
        self._wal_path: str | None = f"{database}-wal" if file_backed else None
        self._local = threading.local()
        self._commits = itertools.count(1)  # durable commits this process made, numbered
        self._durable = 0  # how many of them are known to be on disk
        self._sync_lock = threading.Lock()
        # Reads begin a deferred transaction: they never wait for the write lock.
        self._reader = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    @contextmanager
    def session(self, durable: bool = False, bind: Connection | None = None) -> Iterator[Session]:
        """Open a write session: one transaction, committed on success, rolled back on error.

        `durable`: on a SQLite file, the commit is on disk before this returns (`make_durable`).
        `bind`: a connection the caller holds, used instead of one from the pool.
        """
        session_for = self._writer if bind is None else functools.partial(self._writer, bind=bind)
        with self.write_turn(), session_for() as session, session.begin():
            yield session
        if durable:
            self.make_durable(next(self._commits))

    def make_durable(self, commit: int | None = None) -> None:
        """Make a commit (by default every one so far) survive a power cut: fsync the WAL.

        SQLite recovers every committed transaction whose pages are in the WAL on disk; with no
        WAL file, its contents were checkpointed into the database file, which SQLite fsyncs.
        The threads of a process share their fsyncs: one started after a thread's commit
        carries it, so a thread that waited for another's fsync is done when that one is (a
        group commit). PostgreSQL commits durably by itself.
        """
        if self._wal_path is None:
            return
        with self._sync_lock:
            if commit is not None and commit <= self._durable:
                return  # an fsync that started after this commit has carried it
            covered = next(self._commits) - 1  # every commit numbered before this fsync
            try:
                fd = os.open(self._wal_path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._durable = max(self._durable, covered)

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """On a SQLite file, wait for this thread's turn to write, across threads and processes.

        SQLite lets one writer in at a time; the others retry on a timer that backs off (up to
        100 ms a sleep), so under load a waiter can sleep through many turns. Writers queue on
        an advisory file lock (flock) beside the database instead: the kernel wakes the next
        one the moment the lock is free. The lock only orders writers; SQLite's own locking
        still guarantees correctness, so a process that does not take it (the sqlite3 shell,
        say) is merely not queued.
        """
        if self._lock_path is None:
            yield
            return
        turn: _WriteTurn | None = getattr(self._local, "turn", None)
        if turn is None:
            turn = self._local.turn = _WriteTurn(self._lock_path)
        with turn:
            yield

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


class _WriteTurn:
    """One thread's place in the queue of SQLite writers: an advisory lock on a shared file.

    Re-entrant within the thread (a write session opened inside another only nests); the file
    is closed when the thread ends and its thread-local state is dropped.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.depth = 0

    def __enter__(self) -> None:
        if self.depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)  # None: the file could not be opened
        if fd is not None:
            os.close(fd)


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
        cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        # Temporary tables, sorts and a statement's journal stay in memory: this app's are
        # small (its queries read indexes), and a file for each would cost a write.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {begin}")


def upsert_into(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """Return an INSERT for `table` in a dialect ("sqlite" or "postgresql") with ON CONFLICT.

    Both supported databases speak `INSERT ... ON CONFLICT ... RETURNING`, which stores a row
    once under concurrency in one statement, without a savepoint or a prior SELECT.
    """
    return sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach a Database for the settings' URL to the app (no connection is opened)."""
    app.extensions["db"] = Database(settings.sqlalchemy_url)


def get_db(app: Flask | None = None) -> Database:
    """Return the app's Database."""
    target = app or current_app
    db: Database = target.extensions["db"]
    return db
