"""Helpers the tests share: settings, a live server, child processes, queries."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from flask import Flask
from sqlalchemy import TextClause, create_engine, select, text
from sqlalchemy.pool import NullPool
from twilio.request_validator import RequestValidator
from werkzeug.serving import BaseWSGIServer, make_server

from support.fake_openai import API_KEY, FakeOpenAI
from twilio_chat import create_app
from twilio_chat.accounts.users import create_token, create_user
from twilio_chat.db.engine import Database, get_db
from twilio_chat.db.migrate import upgrade
from twilio_chat.db.models import Job, Message
from twilio_chat.jobs.worker import Worker
from twilio_chat.messaging import InboundFields
from twilio_chat.sandbox.store import SandboxStore
from twilio_chat.settings import Settings, build_settings

SECRET = "test-secret-key-0123456789"


PHONE = "+15551230001"


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


def _named(sql: str, params: tuple[Any, ...]) -> tuple[TextClause, dict[str, Any]]:
    """Turn ? placeholders into named ones, for SQLAlchemy's text()."""
    counter = iter(range(len(params)))
    named = re.sub(r"\?", lambda _m: f":p{next(counter)}", sql)
    return text(named), {f"p{i}": v for i, v in enumerate(params)}


def query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a read-only SQL query (with ? placeholders) on a test's database, from outside."""
    url = database_url(db_path) or f"sqlite:///{db_path}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(*_named(sql, params))]
    finally:
        engine.dispose()


def sandbox_path(db_path: Path) -> Path:
    """Return the sandbox's own SQLite file for a test's data (in its tmp folder, as DB_PATH
    is there also when the app's database is PostgreSQL)."""
    return build_settings({"DB_PATH": str(db_path)}).sandbox_path


def sandbox_query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run a read-only SQL query (with ? placeholders) on the sandbox's store, from outside.

    Through the sandbox's own SandboxStore, which makes its tables if no server has yet.
    """
    store = SandboxStore(sandbox_path(db_path))
    try:
        with store.read() as session:
            return [tuple(r) for r in session.execute(*_named(sql, params))]
    finally:
        store.dispose()


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
    test's database is disposed of (a connection left to the garbage collector is a warning).

    Each callback's thread starts the next one's before it ends, so this looks again until
    none is left.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [t for t in threading.enumerate() if t.name.startswith("sandbox-")]
        if not pending:
            return
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))


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


def post_inbound(live: Live, sender: str, body: str, to: str | None = None) -> requests.Response:
    """Post a signed inbound webhook as Twilio would."""
    sid = "SM" + uuid.uuid4().hex
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": live.settings.account_sid,
        "From": sender,
        "To": to or live.settings.default_from or "",
        "Body": body,
        "NumMedia": "0",
    }
    url = live.url + "/twilio/inbound"
    signature = RequestValidator(live.settings.auth_token).compute_signature(url, form)
    answer = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def text_app(live: Live, body: str, sender: str = PHONE) -> str | None:
    """Text the app through the sandbox's simulator, run the jobs, return the reply's body."""
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": sender, "body": body})
    assert answer.status_code == 201, answer.text
    live.run_jobs()
    return reply_to(live, answer.json()["sid"])


def sandbox_sends(live: Live, to: str = PHONE) -> list[dict[str, Any]]:
    """Return what the sandbox was asked to send to a number (its Twilio-compatible list)."""
    url = f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{live.settings.account_sid}/Messages.json"
    answer = requests.get(
        url,
        params={"To": to, "PageSize": 1000},
        auth=(live.settings.account_sid, live.settings.auth_token),
        timeout=10,
    )
    return [m for m in answer.json()["messages"] if m["direction"] == "outbound-api"]


def enable_ai(live: Live, fake: FakeOpenAI, **extra: Any) -> None:
    """Save an enabled AI config pointing at the fake server."""
    config = {
        "enabled": True,
        "api_key": API_KEY,
        "base_url": fake.base_url,
        "model": "test-model",
        "temperature": 0.3,
        "system_prompt": "Be brief.",
        **extra,
    }
    answer = live.api("POST", "/api/ai/config", json=config)
    assert answer.status_code == 200, answer.text


ADMIN_PASSWORD = "crash-test-admin-password"
CLI = Path(sys.executable).parent / "twilio-chat"  # the console script, as a user runs it


ENV: dict[str, str] = {
    "SECRET_KEY": SECRET,
    "APP_ENV": "test",
    "ADMIN_PASSWORD": ADMIN_PASSWORD,
    "SANDBOX_CALLBACK_DELAY": "0.01",
    "JOB_LEASE_SECONDS": "5",
    "WORKER_POLL_SECONDS": "0.05",
    "JOB_RETRY_BASE_SECONDS": "0.5",
    "AUTO_REPLY_MAX_PER_HOUR": "1000",
    "CHAT_MODE": "echo",
}


@dataclass
class Proc:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; always reap it and close the log."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(5)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(5)
        finally:
            self.log_file.close()

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of its output."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Procs:
    """Starts child processes and stops every one of them at teardown."""

    env: dict[str, str]
    cwd: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Proc:
        """Start `twilio-chat ARGS…` with the test's environment."""
        log_path = self.cwd / f"{name}.log"
        log_file = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                [str(CLI), *args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            log_file.close()
            raise
        proc = Proc(name, popen, log_path, log_file)
        self.started.append(proc)
        return proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(db_path: Path, port: int) -> dict[str, str]:
    """os.environ without any of the app's settings (nor the twilio SDK's), plus the test's."""
    ours = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("TWILIO_")}
    env.update(ENV)
    env.update(DB_PATH=str(db_path), APP_PORT=str(port), PYTHONUNBUFFERED="1")
    url = database_url(db_path)
    if url:
        env["DATABASE_URL"] = url
    return env


def wait_healthy(server: Proc, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.popen.poll() is None, f"the server exited early:\n{server.tail()}"
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or still booting
            pass
        assert time.monotonic() < deadline, f"/healthz did not answer:\n{server.tail()}"
        time.sleep(0.05)


def logged_in(live: Live, lang: str | None = None) -> requests.Session:
    """A browser-like session logged in to the panel."""
    session = requests.Session()
    if lang:
        session.headers["Accept-Language"] = lang
    page = session.get(live.url + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    answer = session.post(
        live.url + "/login",
        data={"username": "admin", "password": "admin-password", "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    return session


def inbound_sid(live: Live, body: str = "hello") -> str:
    """Text the app; return the inbound sid (its reply job is queued, not yet run)."""
    answer = live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": body})
    assert answer.status_code == 201
    sid: str = answer.json()["sid"]
    return sid


OURS = "+15005550006"


def numbered_text(
    n: int, sender: str = "+15557654321", body: str = "hello", **extra: Any
) -> InboundFields:
    """An inbound message with sid number n."""
    return InboundFields(
        sid=f"SM{n:032x}",
        sender=sender,
        our_number=OURS,
        service_sid=None,
        body=body,
        media=[],
        num_segments=1,
        account_sid="AC" + "0" * 32,
        **extra,
    )


def reply_keys(db: Database) -> list[str]:
    """The reply jobs' keys, oldest first."""
    with db.read() as session:
        return [k or "" for k in session.scalars(select(Job.unique_key).order_by(Job.id))]


def reply_to(live: Live, sid: str) -> str | None:
    """Return the body of the automatic reply to an inbound sid, if any."""
    with live.db.read() as session:
        return session.scalar(select(Message.body).where(Message.reply_to_sid == sid))
