"""The inbound writer process: every web process's texts stored in one place, nothing lost if not.

On a SQLite file under gunicorn, the master starts a process (ingest_process.py) that stores the
inbound texts of every web process, a batch at a time; when it is not there, has gone, or fails,
each web process stores its texts itself. These tests run the server's loop in a thread of the
test (the same code the process runs) and, in the slow test, gunicorn with the production
config, whose writer process is killed while texts arrive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Client
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from support import (
    OURS,
    child_env,
    free_port,
    make_settings,
    numbered_text,
    query,
    reply_keys,
    wait_for,
)
from twilio.request_validator import RequestValidator

from twilio_chat import messaging
from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message
from twilio_chat.messaging import ingest, ingest_process
from twilio_chat.messaging.ingest import InboundWriter, write_batch
from twilio_chat.messaging.ingest_process import ProcessWriter, WriterServer, address, authkey
from twilio_chat.replies import policy as replies
from twilio_chat.sandbox.state import inbound_form
from twilio_chat.settings import Settings, build_settings

ROOT = Path(__file__).resolve().parent.parent
GATHER_WAIT_SEEN = 4.0  # a turn this long waited out the test's 5 s window
BIN = Path(sys.executable).parent


@pytest.fixture
def where(settings: Settings) -> str:
    """The writer process's address for the test's database (SQLite only)."""
    found = address(settings)
    if found is None:
        pytest.skip("the writer process is SQLite's (and Linux's)")
    return found


class Running:
    """A writer server's loop in a thread of the test."""

    def __init__(self, settings: Settings, where: str, db: Database | None = None) -> None:
        self.server = WriterServer(settings, where, db)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop the loop and close its connections."""
        self.server.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def running(settings: Settings, where: str) -> Iterator[Running]:
    """A writer server serving the test's database."""
    server = Running(settings, where)
    yield server
    server.stop()


def stored(db: Database) -> dict[str, int]:
    """Return every stored message's sid and id."""
    with db.read() as session:
        return {sid: id_ for sid, id_ in session.execute(select(Message.sid, Message.id))}


def test_the_address_is_the_databases_own_and_only_sqlite_files_have_one(
    tmp_path: Path,
) -> None:
    one = make_settings(tmp_path / "one.db")
    other = make_settings(tmp_path / "other.db")
    assert address(one) is not None and address(one) == address(make_settings(tmp_path / "one.db"))
    assert address(one) != address(other)
    on_postgres = build_settings(
        {"DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/db", "SECRET_KEY": "x" * 32}
    )
    assert address(on_postgres) is None
    assert authkey(one) != one.secret_bytes  # derived from SECRET_KEY, never the key itself


def test_the_writer_process_stores_what_many_web_threads_send_each_with_its_own_result(
    db: Database, settings: Settings, where: str, running: Running
) -> None:
    local = InboundWriter(db, settings)
    writer = ProcessWriter(settings, local, where)
    results: dict[int, Any] = {}

    def post(n: int) -> None:
        results[n] = writer.store(numbered_text(n % 30, sender=f"+1555000{n % 7:04d}"))

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(post, range(90)))
    assert len(results) == 90
    assert sum(r.created for r in results.values()) == 30  # each of the 30 sids once
    rows = stored(db)
    assert len(rows) == 30
    for n, result in results.items():
        assert result.message_id == rows[numbered_text(n % 30).sid]
    assert len(reply_keys(db)) == 30
    assert local._thread is None  # the web process stored nothing itself


def test_the_writer_process_takes_the_web_processs_word_on_whether_a_sender_is_a_phone(
    db: Database,
    settings: Settings,
    where: str,
    running: Running,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A webhook's fields carry the web process's answer; the writer process, which every text
    # passes through, must not parse the number again.
    asked: list[str] = []

    def parse_again(number: str) -> bool:
        asked.append(number)
        return True

    monkeypatch.setattr(ingest_process, "is_e164", parse_again)
    monkeypatch.setattr(replies, "is_e164", parse_again)
    writer = ProcessWriter(settings, InboundWriter(db, settings), where)
    senders = {"SM" + "a" * 32: "+15557650001", "SM" + "b" * 32: "CarrierInfo"}
    for sid, sender in senders.items():
        form = inbound_form(settings.account_sid, sid, sender, OURS, "Hi", [])
        assert writer.store(messaging.inbound_fields(form)).created
    assert asked == []
    assert len(reply_keys(db)) == 1  # the phone number's text only
    with db.read() as session:
        assert set(session.scalars(select(Message.sid))) == set(senders)


def test_under_load_a_small_batch_waits_for_more_texts_and_a_lone_text_does_not(
    db: Database, settings: Settings, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[int]] = []

    def recording(db: Database, settings: Settings, batch: list[Any], *args: Any) -> None:
        batches.append([int(item.fields.sid[2:], 16) for item in batch])
        write_batch(db, settings, batch, *args)

    monkeypatch.setattr(ingest_process, "write_batch", recording)
    monkeypatch.setattr(ingest_process, "GATHER_SECONDS", 5.0)  # long: the test sees who waits
    monkeypatch.setattr(ingest_process, "GATHER_TARGET", 2)
    server = WriterServer(settings, where, db)
    threading.Thread(target=server._accept, daemon=True).start()
    try:
        first, second = (Client(where, family="AF_UNIX", authkey=authkey(settings)) for _ in "12")
        wait_for(lambda: len(server._new) == 2)
        assert server._ready(1) == []  # admits both; nothing was sent yet

        def turn(*texts: tuple[Any, int]) -> list[int]:
            """Send one text on each connection given, run one turn of the loop, read answers."""
            for conn, n in texts:
                conn.send(numbered_text(n))
            server._turn()
            for conn in (first, second):
                while conn.poll(0):
                    assert conn.recv()[0] == "ok"
            return batches[-1]

        def later(conn: Any, n: int) -> None:
            """Send a text 0.3 s from now, while the loop's turn runs."""
            threading.Timer(0.3, conn.send, [numbered_text(n)]).start()

        later(second, 2)
        assert turn((first, 1)) == [1]  # a lone text, no load: stored at once, alone
        assert turn() == [2]
        assert turn((first, 3), (second, 4)) == [3, 4]  # two at once: under load now
        later(second, 6)
        assert turn((first, 5)) == [5, 6]  # under load: 5 waited, and 6 joined it
        started = time.monotonic()
        assert turn((first, 7), (second, 8)) == [7, 8]  # as many as it waits for: no wait
        assert time.monotonic() - started < GATHER_WAIT_SEEN
        assert len(stored(db)) == 8
    finally:
        server.close()


def test_the_writer_process_stores_its_batches_on_one_connection_it_keeps(
    db: Database, settings: Settings, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch through a pooled connection and an ORM session cost the writer process more than
    # the batch's own statements: it keeps one connection, and a failed batch replaces it.
    checkouts: list[int] = []
    event.listen(db.engine, "checkout", lambda *_: checkouts.append(1))
    server = Running(settings, where, db)
    try:
        writer = ProcessWriter(settings, InboundWriter(db, settings), where)
        for n in range(1, 6):  # one after another: five batches
            assert writer.store(numbered_text(n, sender=f"+1555000{n:04d}")).created
        assert len(checkouts) == 1
        assert writer.store(numbered_text(6, body="STOP")).keyword == "opt_out"  # through a session
        assert len(checkouts) == 2

        real = ingest.store_plain_batch
        failed: list[str] = []

        def fails_once(conn: Any, settings: Settings, batch: Any, answer: bool = True) -> Any:
            if not failed:
                failed.append(batch[0].sid)
                raise OperationalError("INSERT", {}, Exception("disk I/O error"))
            return real(conn, settings, batch, answer)

        monkeypatch.setattr(ingest, "store_plain_batch", fails_once)
        assert writer.store(numbered_text(7)).created  # the web process stored it after the error
        assert writer.store(numbered_text(8)).created  # the writer process again, on a new one
    finally:
        server.stop()
    assert failed == [numbered_text(7).sid]
    assert len(checkouts) == 4  # then the web process's own session, and a new kept one
    assert sorted(stored(db)) == sorted(numbered_text(n).sid for n in range(1, 9))


def test_a_text_the_writer_process_stored_wakes_the_web_processs_reply_workers(
    db: Database,
    settings: Settings,
    where: str,
    running: Running,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The commit happens in the writer process, where no reply worker of the web process
    # waits: the web process must wake its own, or a reply waits for their next poll.
    woken: list[str] = []
    monkeypatch.setattr(ingest_process, "notify_enqueued", lambda: woken.append("wake"))
    writer = ProcessWriter(settings, InboundWriter(db, settings), where)
    assert writer.store(numbered_text(1)).reply_enqueued
    assert woken == ["wake"]
    assert not writer.store(numbered_text(1)).reply_enqueued  # a duplicate: no new job
    assert woken == ["wake"]


def test_with_no_writer_process_a_web_process_stores_its_texts_itself(
    db: Database, settings: Settings, where: str
) -> None:
    writer = ProcessWriter(settings, InboundWriter(db, settings), where)
    first, again = writer.store(numbered_text(1)), writer.store(numbered_text(1))
    assert (first.created, again.created) == (True, False)
    assert again.message_id == first.message_id
    assert list(stored(db)) == [numbered_text(1).sid]
    assert len(reply_keys(db)) == 1


def test_a_writer_process_that_goes_away_and_comes_back_loses_nothing_and_doubles_nothing(
    db: Database,
    settings: Settings,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_process, "RETRY_SECONDS", 0.0)
    local = InboundWriter(db, settings)
    writer = ProcessWriter(settings, local, where)
    server = Running(settings, where)
    assert [writer.store(numbered_text(n)).created for n in range(5)] == [True] * 5
    assert local._thread is None

    server.stop()  # the process ends (a crash, a restart): its connections close
    assert [writer.store(numbered_text(n)).created for n in range(3, 8)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert local._thread is not None  # stored by the web process itself

    server = Running(settings, where)  # started again by the master
    try:
        assert [writer.store(numbered_text(n)).created for n in range(6, 10)] == [
            False,
            False,
            True,
            True,
        ]
    finally:
        server.stop()
    assert sorted(stored(db)) == sorted(numbered_text(n).sid for n in range(10))
    assert len(reply_keys(db)) == 10


def test_an_error_in_the_writer_process_reaches_the_web_process_which_stores_the_text(
    db: Database, settings: Settings, where: str, tmp_path: Path
) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'no-such-folder' / 'app.db'}")  # cannot open
    server = Running(settings, where, broken)
    try:
        writer = ProcessWriter(settings, InboundWriter(db, settings), where)
        assert writer.store(numbered_text(1)).created
    finally:
        server.stop()
    assert list(stored(db)) == [numbered_text(1).sid]


def test_the_writer_process_admits_only_holders_of_the_key(
    db: Database, settings: Settings, where: str, running: Running
) -> None:
    with pytest.raises(Exception, match="digest"):  # the HMAC handshake fails
        Client(where, family="AF_UNIX", authkey=b"not the key")
    writer = ProcessWriter(settings, InboundWriter(db, settings), where)
    assert writer.store(numbered_text(1)).created
    with db.read() as session:
        assert session.scalar(select(func.count(Message.id))) == 1


def test_a_writer_process_with_another_key_is_not_trusted_and_the_text_is_stored_here(
    db: Database, settings: Settings, where: str
) -> None:
    # Another server's writer on this database's address (another SECRET_KEY): the handshake
    # fails, and the web process stores its texts itself.
    stranger = Running(
        make_settings(Path(settings.db_path), SECRET_KEY="another-" + "k" * 32), where
    )
    try:
        local = InboundWriter(db, settings)
        writer = ProcessWriter(settings, local, where)
        assert [writer.store(numbered_text(n)).created for n in range(3)] == [True, True, True]
        assert local._thread is not None
    finally:
        stranger.stop()
    assert sorted(stored(db)) == sorted(numbered_text(n).sid for n in range(3))


# gunicorn with the production config ----------------------------------------------------------


def _gunicorn(db_path: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = child_env(db_path, port)
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
        if b"twilio_chat.messaging.ingest_process" in Path(f"/proc/{child}/cmdline").read_bytes():
            found += _children(child)
    return found


def _web_processes(master: int) -> list[int]:
    """Return the pids of gunicorn's worker processes: the master's children but the writer's."""
    return [
        child
        for child in _children(master)
        if b"twilio_chat.messaging.ingest_process"
        not in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@contextmanager
def _serving(db_path: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Serve the app under gunicorn's production config on a free port, logging to `log`.

    Yields the master and the port, and stops the server (SIGTERM) on the way out. Skips the
    test where there is no writer process to see (PostgreSQL, or not Linux).
    """
    if address(make_settings(db_path)) is None:
        pytest.skip("the writer process is SQLite's (and Linux's)")
    port = free_port()
    with log.open("wb") as output:
        server = _gunicorn(db_path, port, output)
        try:
            yield server, port
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_gunicorn_the_writer_process_stores_texts_and_is_started_again_if_killed(
    db_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with _serving(db_path, log) as (server, port):
        first, again = _post_and_kill_the_writer(server.pid, make_settings(db_path), port)
    assert query(db_path, "SELECT count(*), count(DISTINCT sid) FROM messages") == [(500, 500)]
    assert query(db_path, "SELECT count(*) FROM jobs WHERE kind = 'reply'") == [(500,)]
    text_log = log.read_text(errors="replace")
    assert f"inbound writer process {first} serving" in text_log
    assert f"inbound writer process {first} ended (exit code -9); starting it again" in text_log
    assert f"inbound writer process {again} serving" in text_log
    assert not Path(f"/proc/{again}").exists(), "the writer process outlived gunicorn"


def _answers(url: str) -> bool:
    """Return whether a GET of url answers 2xx (False while the server is not up)."""
    try:
        return requests.get(url, timeout=5).ok
    except (requests.ConnectionError, requests.Timeout):
        return False


def _post_and_kill_the_writer(master: int, settings: Settings, port: int) -> tuple[int, int]:
    """Post 500 signed texts, killing the writer process after 200; return its two pids."""
    url = f"http://127.0.0.1:{port}/twilio/inbound"
    health = f"http://127.0.0.1:{port}/healthz"
    assert wait_for(lambda: _answers(health), 30), "gunicorn did not answer"
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


def _thread_policies(pid: int) -> list[int]:
    """Return the scheduling policy of each thread of a process."""
    return [os.sched_getscheduler(int(task.name)) for task in Path(f"/proc/{pid}/task").iterdir()]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_gunicorn_web_threads_give_up_wakeup_preemption_and_the_writer_process_keeps_it(
    db_path: Path, tmp_path: Path
) -> None:
    with _serving(db_path, tmp_path / "gunicorn.log") as (server, port):
        health = f"http://127.0.0.1:{port}/healthz"
        assert wait_for(lambda: _answers(health), 30), "gunicorn did not answer"
        (writer,) = wait_for(lambda: _writer_processes(server.pid), 10)
        with ThreadPoolExecutor(max_workers=16) as pool:  # gthread starts its request threads
            assert all(pool.map(lambda _: _answers(health), range(64)))
        web = _web_processes(server.pid)
        web_policies = [policy for pid in web for policy in _thread_policies(pid)]
        writer_policies = _thread_policies(writer)
        master_policies = _thread_policies(server.pid)
    assert len(web) == 2
    assert len(web_policies) > 2 * 2  # each worker's main thread, at least one request thread
    assert set(web_policies) == {os.SCHED_BATCH}
    assert set(writer_policies) == {os.SCHED_OTHER}
    assert set(master_policies) == {os.SCHED_OTHER}
