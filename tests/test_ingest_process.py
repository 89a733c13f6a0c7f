"""The inbound writer process: every web process's texts stored in one place, nothing lost if not.

On a SQLite file under gunicorn, the master starts a process (ingest_process.py) that drains
the inbound texts every web process wrote to its journal (journal.py) into the database; when it
is not there, each web process stores its texts itself. These tests run the server's loop in a
thread of the test (the same code the process runs) and, in the slow test, gunicorn with the
production config, whose writer process is killed while texts arrive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import pytest
import requests
from conftest import make_settings, query, wait_for
from sqlalchemy import select
from test_crash import _child_env, _free_port
from test_ingest import OURS, reply_keys, text
from twilio.request_validator import RequestValidator

from twilio_chat import journal, messaging, replies
from twilio_chat.db import Database
from twilio_chat.ingest import InboundWriter
from twilio_chat.ingest_process import WriterServer
from twilio_chat.journal import JournalWriter
from twilio_chat.models import Message
from twilio_chat.sandbox.state import inbound_form
from twilio_chat.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def where(settings: Settings) -> Path:
    """The journal's folder for the test's database (SQLite only)."""
    found = journal.folder(settings)
    if found is None:
        pytest.skip("the writer process is SQLite's (and Linux's)")
    return found


class Running:
    """A writer server's loop in a thread of the test."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.server = WriterServer(settings, db)
        assert self.server.start()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop the loop (it drains what is left) and let go of the journal."""
        self.server.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def running(settings: Settings, where: Path) -> Iterator[Running]:
    """A writer server serving the test's database."""
    server = Running(settings)
    yield server
    server.stop()


def stored(db: Database) -> dict[str, int]:
    """Return every stored message's sid and id."""
    with db.read() as session:
        return {sid: id_ for sid, id_ in session.execute(select(Message.sid, Message.id))}


def test_the_writer_process_stores_what_many_web_threads_write_soon_after_each_200(
    db: Database, settings: Settings, where: Path, running: Running
) -> None:
    local = InboundWriter(db, settings)
    writer = JournalWriter(where, local)

    def post(n: int) -> None:
        assert writer.store(text(n % 30, sender=f"+1555000{n % 7:04d}")) is None

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(post, range(90)))
    assert wait_for(lambda: len(stored(db)) == 30)  # each of the 30 sids once
    assert wait_for(lambda: len(reply_keys(db)) == 30)
    assert local._thread is None  # the web process stored nothing itself


def test_a_stopping_writer_process_stores_everything_written_before_it_ends(
    db: Database, settings: Settings, where: Path
) -> None:
    server = Running(settings)
    writer = JournalWriter(where, InboundWriter(db, settings))
    for n in range(20):
        assert writer.store(text(n)) is None
    server.stop()  # gunicorn stops it once the web processes have ended
    assert sorted(stored(db)) == sorted(text(n).sid for n in range(20))
    assert not journal.drain_running(where)  # the next texts are stored by the web processes
    assert writer.store(text(99)) is None  # it still trusts its look at the lock for a moment
    writer._probe_until = 0.0  # a second later
    result = writer.store(text(100))
    assert result is not None and result.created


def test_a_second_writer_process_for_the_same_journal_stands_aside(
    settings: Settings, where: Path, running: Running
) -> None:
    other = WriterServer(settings)
    try:
        assert not other.start()
    finally:
        other.close()


def test_the_writer_process_takes_the_web_processs_word_on_whether_a_sender_is_a_phone(
    db: Database,
    settings: Settings,
    where: Path,
    running: Running,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A webhook's line carries the web process's answer: the drain, which every text passes
    # through, must not parse the number again.
    asked: list[str] = []

    def parse_again(number: str) -> bool:
        asked.append(number)
        return True

    writer = JournalWriter(where, InboundWriter(db, settings))
    senders = {"SM" + "a" * 32: "+15557650001", "SM" + "b" * 32: "CarrierInfo"}
    fields = [
        messaging.inbound_fields(inbound_form(settings.account_sid, sid, sender, OURS, "Hi", []))
        for sid, sender in senders.items()
    ]
    monkeypatch.setattr(replies, "is_e164", parse_again)
    for one in fields:
        assert writer.store(one) is None
    assert wait_for(lambda: set(stored(db)) == set(senders))
    assert asked == []
    assert reply_keys(db) == [f"reply:{'SM' + 'a' * 32}"]  # the phone number's text only


# gunicorn with the production config ----------------------------------------------------------


def _gunicorn(db_path: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = _child_env(db_path, port)
    env.update(
        APP_ENV="production", WORKER_ENABLED="false", PUBLIC_BASE_URL=f"http://127.0.0.1:{port}"
    )
    subprocess.run(
        [str(BIN / "twilio-chat"), "prepare"],
        env=env,
        cwd=Path(log.name).parent,
        check=True,
        capture_output=True,
    )
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), "twilio_chat.wsgi:app"],
        env=env,
        cwd=Path(log.name).parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _children(pid: int) -> list[int]:
    """Return the pids of a process's children (of any of its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _writer_processes(master: int) -> list[int]:
    """Return the pids of the writer processes that serve: forked by the master's child."""
    found = []
    for child in _children(master):
        if b"twilio_chat.ingest_process" in Path(f"/proc/{child}/cmdline").read_bytes():
            found += _children(child)
    return found


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_gunicorn_the_writer_process_stores_texts_and_is_started_again_if_killed(
    db_path: Path, tmp_path: Path
) -> None:
    settings = make_settings(db_path)
    if journal.folder(settings) is None:
        pytest.skip("the writer process is SQLite's (and Linux's)")
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        server = _gunicorn(db_path, port, output)
        try:
            first, again = _post_and_kill_the_writer(server.pid, settings, port)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    assert query(db_path, "SELECT count(*), count(DISTINCT sid) FROM messages") == [(500, 500)]
    assert query(db_path, "SELECT count(*) FROM jobs WHERE kind = 'reply'") == [(500,)]
    text_log = log.read_text(errors="replace")
    assert f"inbound writer process {first} serving" in text_log
    assert f"inbound writer process {first} ended (exit code -9); starting it again" in text_log
    assert f"inbound writer process {again} serving" in text_log
    assert not Path(f"/proc/{again}").exists(), "the writer process outlived gunicorn"


def _post_and_kill_the_writer(master: int, settings: Settings, port: int) -> tuple[int, int]:
    """Post 500 signed texts, killing the writer process after 200; return its two pids."""
    url = f"http://127.0.0.1:{port}/twilio/inbound"

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or still booting
            return False

    assert wait_for(healthy, 30), "gunicorn did not answer"
    (first,) = wait_for(lambda: _writer_processes(master), 10)
    validator = RequestValidator(settings.auth_token)  # the server has the same SECRET_KEY

    def post(n: int) -> int:
        sid = f"SM{n:032x}"
        form = inbound_form(settings.account_sid, sid, f"+1555400{n % 50:04d}", "", "hi", [])
        signature = validator.compute_signature(url, form)
        answer = requests.post(
            url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30
        )
        return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(200)))
        os.kill(first, signal.SIGKILL)  # the web processes store on their own meanwhile
        statuses += list(pool.map(post, range(200, 400)))
        (again,) = wait_for(lambda: [p for p in _writer_processes(master) if p != first], 10)
        statuses += list(pool.map(post, range(400, 500)))
    assert Counter(statuses) == {200: 500}
    return first, again
