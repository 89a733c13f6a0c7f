"""Shared fixtures: a fresh migrated database per test, a live server on 127.0.0.1, helpers.

With TEST_DATABASE_URL set (a PostgreSQL URL), every test gets its own PostgreSQL database,
copied from a migrated template; otherwise its own SQLite file.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from twilio_chat import create_app
from twilio_chat.db import Database, get_db
from twilio_chat.migrate import upgrade
from twilio_chat.settings import Settings, build_settings
from twilio_chat.users import create_token, create_user
from twilio_chat.web.live import stop_long_polls
from twilio_chat.worker import Worker

SECRET = "test-secret-key-0123456789"
PHONE = "+15551230001"


@pytest.fixture(autouse=True)
def _no_twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twilio SDK reads TWILIO_EDGE/TWILIO_REGION itself: tests must not have them."""
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(name, raising=False)


PG_URL = os.environ.get("TEST_DATABASE_URL") or None
# The PostgreSQL database of each test, keyed by the test's db_path.
PG_DATABASES: dict[str, str] = {}


def _pg_admin() -> Any:
    """An autocommit connection to the PostgreSQL server of TEST_DATABASE_URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL or "")
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=url.database or "postgres",
        autocommit=True,
    )


def _pg_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    # Tests need no durability across a server crash: skipping the fsync per commit keeps
    # the PostgreSQL pass fast. (A clean stop, as the spool test does, still writes all.)
    url = make_url(PG_URL or "").set(database=name)
    url = url.update_query_dict({"options": "-c synchronous_commit=off"})
    return url.render_as_string(hide_password=False)


def _migrated_template(db: Database) -> None:
    upgrade(db)
    create_user(db, "admin", "admin-password", is_admin=True)  # argon2 once, not per test
    db.dispose()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | str]:
    """A database migrated to head once per run; each test gets a copy."""
    if PG_URL is None:
        path = tmp_path_factory.mktemp("template") / "app.db"
        _migrated_template(Database(f"sqlite:///{path}"))
        yield path
        return
    name = f"tc_template_{os.getpid()}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _migrated_template(Database(_pg_url(name)))
    yield name
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(db_path: Path) -> str | None:
    """Return the PostgreSQL URL of a test's database, or None on SQLite (DB_PATH is used)."""
    return PG_DATABASES.get(str(db_path))


def make_settings(db_path: Path, **overrides: Any) -> Settings:
    """Build Settings for a test from environment-style names."""
    values: dict[str, Any] = {
        "DB_PATH": str(db_path),
        "SECRET_KEY": SECRET,
        "APP_ENV": "test",
        "SANDBOX_CALLBACK_DELAY": "0.01",
        "WORKER_POLL_SECONDS": "0.05",
    }
    url = database_url(db_path)
    if url:
        values["DATABASE_URL"] = url
    values.update(overrides)
    return build_settings(values)


@contextmanager
def fresh_database(target: Path, template: Path | str) -> Iterator[Path]:
    """Make a migrated database known by `target`: a copied SQLite file or a PostgreSQL copy."""
    if isinstance(template, Path):
        shutil.copy(template, target)
        yield target
        return
    name = f"tc_{uuid.uuid4().hex[:16]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    PG_DATABASES[str(target)] = _pg_url(name)
    try:
        yield target
    finally:
        PG_DATABASES.pop(str(target), None)
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path | str) -> Iterator[Path]:
    """A migrated database for this test: a SQLite file, or a PostgreSQL database."""
    with fresh_database(tmp_path / "app.db", template_db) as path:
        yield path


@pytest.fixture
def settings(db_path: Path) -> Settings:
    """Settings for the test's database."""
    return make_settings(db_path)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The test's migrated database."""
    database = Database(settings.sqlalchemy_url)
    yield database
    database.dispose()


def query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a read-only SQL query (with ? placeholders) on a test's database, from outside."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = database_url(db_path) or f"sqlite:///{db_path}"
    counter = iter(range(len(params)))
    named = re.sub(r"\?", lambda _m: f":p{next(counter)}", sql)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(named), {f"p{i}": v for i, v in enumerate(params)})
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


@dataclass
class Live:
    """A running app on 127.0.0.1 with an admin user and a bearer token."""

    app: Flask
    url: str
    settings: Settings
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def db(self) -> Database:
        """Return the app's database."""
        return get_db(self.app)

    def api(
        self, method: str, path: str, token: str | None = "default", **kw: Any
    ) -> requests.Response:
        """Call the API with the admin's bearer token (or another, or none)."""
        headers = kw.pop("headers", {})
        bearer = self.token if token == "default" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        return self.session.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def run_jobs(self, limit: int = 100) -> int:
        """Run queued jobs in this thread until none is left; return how many ran."""
        worker = Worker(self.app, name="test-worker")
        count = 0
        while count < limit and worker.run_once():
            count += 1
        return count


def start_live(db_path: Path, **overrides: Any) -> tuple[Live, BaseWSGIServer, threading.Thread]:
    """Start a server on a free port with settings that point the sandbox at it."""
    server = make_server("127.0.0.1", 0, Flask("placeholder"), threaded=True)
    port = server.port
    settings = make_settings(db_path, APP_PORT=str(port), **overrides)
    app = create_app(settings)
    server.app = app
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _row, token = create_token(get_db(app), "admin", "tests")
    return Live(app, f"http://127.0.0.1:{port}", settings, token), server, thread


@pytest.fixture
def live_factory(db_path: Path) -> Iterator[Callable[..., Live]]:
    """Start live servers with extra settings; all are stopped at the end."""
    started: list[tuple[BaseWSGIServer, threading.Thread, Live]] = []

    def factory(**overrides: Any) -> Live:
        live, server, thread = start_live(db_path, **overrides)
        started.append((server, thread, live))
        return live

    yield factory
    settle_sandbox_callbacks()
    for server, thread, live in started:
        stop_long_polls(live.app)  # a page's poll would query a database dropped after the test
        server.shutdown()
        thread.join(5)
        server.server_close()
        live.session.close()
    settle_request_threads()
    for _server, _thread, live in started:
        get_db(live.app).dispose()


def settle_request_threads(timeout: float = 2.0) -> None:
    """Give the live servers' request threads (daemons, not joined on close) a moment to end,
    so none returns a connection to a pool already disposed of (left to the garbage
    collector, a connection is a warning in a later test)."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if "process_request_thread" in thread.name:
            thread.join(max(0.0, deadline - time.monotonic()))


def settle_sandbox_callbacks(timeout: float = 5.0) -> None:
    """Wait for the sandbox's status-callback threads, so none opens a connection after the
    test's database is disposed of (a connection left to the garbage collector is a warning)."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("sandbox-"):
            thread.join(max(0.0, deadline - time.monotonic()))


@pytest.fixture
def live(live_factory: Callable[..., Live]) -> Live:
    """A running app in sandbox mode."""
    return live_factory()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy and return its value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def fake_openai() -> Iterator[Any]:
    """A local OpenAI-compatible server (see fake_openai.py)."""
    from fake_openai import running

    with running() as state:
        yield state
