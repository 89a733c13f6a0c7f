"""Shared fixtures: a fresh migrated database per test, a live server on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    PG_URL,
    Live,
    Procs,
    _migrated_template,
    _pg_admin,
    _pg_url,
    child_env,
    free_port,
    fresh_database,
    make_settings,
    settle_request_threads,
    settle_sandbox_callbacks,
    start_live,
)
from werkzeug.serving import BaseWSGIServer

from twilio_chat.db.engine import Database, get_db
from twilio_chat.sandbox import get_store
from twilio_chat.settings import Settings
from twilio_chat.web.live import stop_long_polls


@pytest.fixture(autouse=True)
def _no_twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twilio SDK reads TWILIO_EDGE/TWILIO_REGION itself: tests must not have them."""
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(name, raising=False)


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
        if live.settings.sandbox:
            get_store(live.app).dispose()


@pytest.fixture
def live(live_factory: Callable[..., Live]) -> Live:
    """A running app in sandbox mode."""
    return live_factory()


@pytest.fixture
def fake_openai() -> Iterator[Any]:
    """A local OpenAI-compatible server (see fake_openai.py)."""
    from support.fake_openai import running

    with running() as state:
        yield state


@pytest.fixture
def procs(tmp_path: Path, db_path: Path) -> Iterator[Procs]:
    """The child processes of one test; stopped at teardown, their output tails printed."""
    port = free_port()
    manager = Procs(child_env(db_path, port), tmp_path)
    yield manager
    for proc in reversed(manager.started):  # workers first, then the server
        proc.stop()
    for proc in manager.started:  # pytest shows this only when the test failed
        print(f"----- {proc.name} (exit {proc.popen.returncode}), last lines -----")
        print(proc.tail())
