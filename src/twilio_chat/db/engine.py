"""The database engine and sessions; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE."""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import Flask, current_app
from sqlalchemy import (
    BindParameter,
    Connection,
    DateTime,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from twilio_chat.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Every SQLite commit is made with synchronous=NORMAL: in WAL mode the commit is written to the
# WAL file, safe from a crash of the app, but not yet fsynced. Durable write sessions
# (`session(durable=True)`: the inbound texts, which exist nowhere else once Twilio has our
# 200) then fsync the WAL (`Database.make_durable`) before they return: what synchronous=FULL
# does inside the commit, done after the write lock is released. The other process can write
# meanwhile, and one fsync carries every commit made before it, from any process, to disk.
SQLITE_SYNCHRONOUS = "NORMAL"
SQLITE_PREPARED_STATEMENTS = 512  # the driver's default is 128


class Database:
    """An engine and session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            # The driver keeps this many prepared statements per connection: the batch
            # statements take one shape per row count (CountedStatement), besides the rest.
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": 30,
                "cached_statements": SQLITE_PREPARED_STATEMENTS,
            }
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
        # Reads begin a deferred transaction: they never wait for the write lock.
        self._reader = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    @contextmanager
    def session(self, durable: bool = False) -> Iterator[Session]:
        """Open a write session: one transaction, committed on success, rolled back on error.

        `durable`: on SQLite, the commit is on disk before this returns: once the write lock
        is released, the WAL is fsynced (`make_durable`, see SQLITE_SYNCHRONOUS).
        """
        with self.write_turn(), self._writer() as session, session.begin():
            yield session
        if durable:
            self.make_durable()

    def make_durable(self) -> None:
        """Make every commit so far survive a power cut: fsync SQLite's WAL file.

        A commit in WAL mode appends its pages to the WAL; SQLite recovers every committed
        transaction whose pages are on disk. When there is no WAL file, its contents were
        checkpointed into the database file, which SQLite fsyncs after a checkpoint. PostgreSQL
        and an in-memory database need nothing.
        """
        if self._wal_path is None:
            return
        try:
            fd = os.open(self._wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            _datasync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """On a SQLite file, wait for this thread's turn to write, across threads and processes.

        SQLite lets one writer in at a time; the others retry on a timer that backs off (1, 2,
        5, ... up to 100 ms), so under load a waiter can sleep through many turns, and a few
        requests wait for most of a second. Writers queue on an advisory file lock (flock)
        beside the database first: the kernel wakes the next one the moment the lock is free.
        The lock only orders writers; SQLite's own locking still guarantees correctness, so a
        process that does not take it (the sqlite3 shell, say) is merely not queued.
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
        # A statement that writes many rows in a transaction (an inbound batch) journals the
        # pages it changes; past 64 KiB SQLite spilled that journal to a file it created and
        # deleted in /var/tmp, for almost every batch under load. Kept in memory instead, as
        # are temporary tables and sorts: this app's are small (its queries read indexes).
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        # Straight on the driver: exec_driver_sql's statement machinery costs several times
        # what SQLite spends on a BEGIN, and every write transaction starts with one.
        conn.connection.driver_connection.execute(f"BEGIN {begin}")  # type: ignore[union-attr]


def upsert_into(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """Return an INSERT for `table` in a dialect ("sqlite" or "postgresql") with ON CONFLICT.

    Both supported databases speak `INSERT ... ON CONFLICT ... RETURNING`, which stores a row
    once under concurrency in one statement, without a savepoint or a prior SELECT. Hot paths
    build such a statement once per dialect and execute it with parameters, so it is compiled
    once.
    """
    return sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)


T = TypeVar("T")


def _datasync(fd: int) -> None:
    """Flush a file's data to disk: fdatasync where there is one (Linux), else fsync (macOS)."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def per_driver(build: Callable[[Dialect], T]) -> Callable[[Dialect], T]:
    """Make `build(dialect)` run once per database driver; later calls return what it built."""
    built: dict[tuple[str, str], T] = {}

    @functools.wraps(build)
    def once(dialect: Dialect) -> T:
        key = (dialect.name, dialect.driver)
        found = built.get(key)
        if found is None:
            found = built.setdefault(key, build(dialect))
        return found

    return once


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """Return the column type's bind processor; a timestamp's remembers its last conversion.

    Every row of an inbound batch carries the same timestamp object several times over (the
    message's two, its conversation's two, its job's two), and each conversion to SQLite's text
    form cost 2.4 us, more than the insert's own binding.
    """
    convert = type_.dialect_impl(dialect).bind_processor(dialect)
    if convert is None or not _is_datetime(type_):
        return convert
    last: list[tuple[Any, Any]] = [(object(), None)]  # (value, converted): replaced whole

    def remembered(value: Any) -> Any:
        seen, converted = last[0]
        if value is seen:  # the same object: datetimes are immutable
            return converted
        converted = convert(value)
        last[0] = (value, converted)
        return converted

    return remembered


def _is_datetime(type_: TypeEngine[Any]) -> bool:
    return isinstance(getattr(type_, "impl_instance", type_), DateTime)  # or a TypeDecorator's


class DriverStatement:
    """A Core statement compiled once for a dialect, run straight on the DBAPI cursor.

    For the few statements a hot path runs per row (each webhook's insert), SQLAlchemy's
    per-call machinery (cache key, execution context, result object) costs several times what
    SQLite itself spends, and on SQLite that time is spent holding the one write lock. The
    statement is still SQLAlchemy's, built from the models' tables and compiled by the dialect;
    its parameters still go through each column type's own bind processor, and returned values
    through its result processor. Only the execution is the driver's. It must run on a
    connection inside the caller's transaction (`run(session.connection(), ...)`).
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: list[str]) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=keys))
        self.sql = compiled.string
        self._positions = compiled.positiontup  # None for a named paramstyle (psycopg)
        self.named = self._positions is None
        # Parameters of equal types (every row's created_at, say) share one processor.
        shared: dict[str, Callable[[Any], Any] | None] = {}
        self._binds: dict[str, Callable[[Any], Any] | None] = {}
        for name, bind in compiled.binds.items():
            kind = repr(bind.type)  # a type's constructor arguments: equal ones convert alike
            if kind not in shared:
                shared[kind] = _bind_processor(bind.type, dialect)
            self._binds[name] = shared[kind]
        # Values written into the statement itself (`column == "outbound"`, an IN list of
        # constants) are parameters too: they keep their value unless the caller gives one.
        self.fixed = {
            name: bind.value
            for name, bind in compiled.binds.items()
            if not bind.required and bind.callable is None
        }
        columns = getattr(statement, "exported_columns", ())
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def run(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with `values` (by column key) on the connection's cursor; return its rows."""
        binds = self._binds
        if self.fixed:
            values = {**self.fixed, **values}
        if self._positions is None:
            named = {
                name: (value if (convert := binds.get(name)) is None else convert(value))
                for name, value in values.items()
            }
            return self.execute(conn, named)
        return self.execute(
            conn,
            [
                values[name] if (convert := binds[name]) is None else convert(values[name])
                for name in self._positions
            ],
        )

    def execute(
        self, conn: Connection, params: list[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Execute with parameters already bound, in the driver's form; return the rows."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, params)
            if cursor.description is None:
                return []
            results = self._results
            return [
                tuple(
                    value if convert is None else convert(value)
                    for value, convert in zip(row, results, strict=True)
                )
                for row in cursor.fetchall()
            ]
        finally:
            cursor.close()

    def plan(self) -> list[tuple[str, Callable[[Any], Any] | None]]:
        """Return each parameter's name and bind processor, in the driver's order."""
        names = self._positions if self._positions is not None else list(self._binds)
        return [(name, self._binds.get(name)) for name in names]


class CountedStatement:
    """A statement shaped by how many rows it takes (VALUES lists, IN lists), run like a
    DriverStatement: compiled once per dialect and row count, on first use.

    `build(n)` makes the statement for n rows, naming the parameters of row i `<key>_<i>`
    (see `row_binds`); `run` takes the rows as mappings by key. One statement for a batch's n
    rows costs SQLite about what one row's statement does, and Python one call instead of n.
    """

    def __init__(self, dialect: Dialect, build: Callable[[int], ClauseElement]) -> None:
        self.dialect = dialect
        self.build = build
        self._by_count: dict[int, tuple[DriverStatement, list[_RowParam]]] = {}

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Execute for these rows (at least one) and return the statement's rows."""
        count = len(rows)
        found = self._by_count.get(count)
        if found is None:
            statement = DriverStatement(self.build(count), self.dialect, [])
            plan = [
                _RowParam.of(name, convert, statement.fixed) for name, convert in statement.plan()
            ]
            found = self._by_count.setdefault(count, (statement, plan))
        statement, plan = found
        values = [
            p.value
            if p.row < 0
            else (rows[p.row][p.key] if p.convert is None else p.convert(rows[p.row][p.key]))
            for p in plan
        ]
        if statement.named:
            return statement.execute(conn, {p.name: v for p, v in zip(plan, values, strict=True)})
        return statement.execute(conn, values)


@dataclass(frozen=True, slots=True)
class _RowParam:
    """One parameter of a CountedStatement: which row's which key, and its bind processor;
    or (row -1) a value written into the statement itself, bound once."""

    name: str
    row: int
    key: str
    convert: Callable[[Any], Any] | None
    value: Any = None

    @classmethod
    def of(
        cls, name: str, convert: Callable[[Any], Any] | None, fixed: Mapping[str, Any]
    ) -> _RowParam:
        """Read the row and key back from a parameter named `<key>_<row>`, unless it is fixed."""
        if name in fixed:
            value = fixed[name]
            return cls(name, -1, "", None, value if convert is None else convert(value))
        key, _, row = name.rpartition("_")
        return cls(name, int(row), key, convert)


def row_binds(table: Table, keys: Sequence[str], row: int) -> dict[str, BindParameter[Any]]:
    """Return row `row`'s parameters for these columns, named `<key>_<row>`, typed as they are."""
    return {key: bindparam(f"{key}_{row}", type_=table.c[key].type) for key in keys}


def init_app(app: Flask, settings: Settings) -> None:
    """Attach a Database for the settings' URL to the app (no connection is opened)."""
    app.extensions["db"] = Database(settings.sqlalchemy_url)


def get_db(app: Flask | None = None) -> Database:
    """Return the app's Database."""
    target = app or current_app
    db: Database = target.extensions["db"]
    return db
