"""The inbound journal: a text is durable in a web process's file at the 200, stored just after.

On a SQLite file under gunicorn, each web process appends its texts to a journal file and the
writer process drains the files into the database (journal.py). These tests write through the
web process's writer and drain in the test, as the writer process does; test_ingest_process.py
runs the writer process's loop, and gunicorn.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings, wait_for
from sqlalchemy import select
from test_ingest import OURS, reply_keys, text

from twilio_chat import create_app, jobs, journal
from twilio_chat.db import Database
from twilio_chat.ingest import InboundWriter
from twilio_chat.journal import BadLine, Drain, JournalWriter, decode, encode
from twilio_chat.metrics import WEBHOOKS
from twilio_chat.models import Message, OptOut
from twilio_chat.settings import Settings, build_settings
from twilio_chat.worker import Worker

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def where(settings: Settings) -> Path:
    """The journal's folder for the test's database (SQLite only)."""
    found = journal.folder(settings)
    if found is None:
        pytest.skip("the journal is SQLite's (and Linux's)")
    return found


@pytest.fixture
def drain(db: Database, settings: Settings, where: Path) -> Iterator[Drain]:
    """A drain holding the journal's locks, as the writer process does."""
    found = Drain(where, db, settings)
    assert found.acquire(wait=False) and found.serve()
    yield found
    found.release()


@pytest.fixture
def writer(db: Database, settings: Settings, where: Path) -> JournalWriter:
    """A web process's inbound writer."""
    return JournalWriter(where, InboundWriter(db, settings))


def stored(db: Database) -> list[str]:
    """Return every stored message's sid, oldest first."""
    with db.read() as session:
        return list(session.scalars(select(Message.sid).order_by(Message.id)))


def files(where: Path) -> list[str]:
    """Return the journal files' names."""
    return sorted(p.name for p in where.glob("journal-*-*.jsonl"))


def lines(where: Path) -> list[bytes]:
    """Return every line of every journal file (each is filled with zeros after its lines)."""
    found = []
    for name in files(where):
        found += (where / name).read_bytes().rstrip(b"\0").splitlines()
    return found


def bad_lines(where: Path) -> list[dict[str, str]]:
    """Return what was set aside in journal-bad.jsonl."""
    path = where / journal.BAD_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_each_sqlite_file_has_its_own_journal_and_postgresql_has_none(tmp_path: Path) -> None:
    one = journal.folder(make_settings(tmp_path / "one.db"))
    assert one == tmp_path.resolve() / "one.db-inbound"
    assert journal.folder(make_settings(tmp_path / "other.db")) != one
    on_postgres = build_settings(
        {"DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/db", "SECRET_KEY": "x" * 32}
    )
    assert journal.folder(on_postgres) is None


def test_a_line_reads_back_as_the_text_it_holds() -> None:
    fields = replace(
        text(1, body='two\nlines, "quoted", ünïcødé 🙂'),
        media=[{"url": "https://example.com/a.jpg", "content_type": "image/jpeg"}],
        num_segments=3,
        opt_out_type="STOP",
        sender_is_phone=True,
    )
    line = encode(fields, AT)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the body holds
    assert decode(line) == replace(fields, received_at=AT)
    service = replace(text(2), service_sid="MG" + "1" * 32, account_sid=None)
    assert decode(encode(service, AT)) == replace(service, received_at=AT)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"media": "x"}', "media"),
        (b'{"media": [], "segments": "1"}', "segments"),
        (b'{"media": [], "segments": 1, "phone": "yes"}', "phone"),
        (b'{"media": [], "segments": 1, "at": "yesterday"}', "at"),
        (b'{"media": [], "segments": 1, "at": "2026-11-26T12:00:00", "sid": 5}', "sid"),
        (
            b'{"media": [], "segments": 1, "at": "2026-11-26T12:00:00", "sid": "", "from": "x"}',
            "empty",
        ),
    ],
)
def test_a_line_that_is_not_a_text_says_what_is_wrong(raw: bytes, error: str) -> None:
    with pytest.raises(BadLine, match=error):
        decode(raw)


def test_with_no_writer_process_a_web_process_stores_its_texts_itself(
    db: Database, writer: JournalWriter, where: Path
) -> None:
    first, again = writer.store(text(1)), writer.store(text(1))
    assert first is not None and again is not None
    assert (first.created, again.created) == (True, False)
    assert stored(db) == [text(1).sid]
    assert files(where) == []  # no journal is written when nothing drains it


def test_the_line_is_in_the_journal_when_store_returns_and_in_the_database_once_drained(
    db: Database, writer: JournalWriter, drain: Drain, where: Path
) -> None:
    assert writer.store(text(1)) is None  # durable, stored later
    assert [decode(line).sid for line in lines(where)] == [text(1).sid]
    assert stored(db) == []
    result = drain.drain()
    assert (result.stored, result.duplicates, result.set_aside) == (1, 0, 0)
    assert stored(db) == [text(1).sid]
    assert reply_keys(db) == [f"reply:{text(1).sid}"]
    assert result.dropped == 0 and len(files(where)) == 1  # its web process may still write there
    assert drain.drain().lines == 0  # read up to where it stopped: nothing again


def test_many_threads_leave_whole_lines_and_every_text_is_stored_once(
    db: Database, writer: JournalWriter, drain: Drain, where: Path
) -> None:
    def send(first: int) -> None:
        for n in range(first, first + 40):
            assert writer.store(text(n, sender=f"+1555000{n % 7:04d}")) is None

    threads = [threading.Thread(target=send, args=(t * 40,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(decode(line).sid for line in lines(where)) == sorted(
        text(n).sid for n in range(320)
    )
    assert drain.drain().stored == 320
    assert sorted(stored(db)) == sorted(text(n).sid for n in range(320))
    assert len(reply_keys(db)) == 320


def test_a_full_file_is_left_for_the_next_and_dropped_once_drained(
    db: Database,
    writer: JournalWriter,
    drain: Drain,
    where: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for one line a file (a second one, and the spare made ready ahead, need the next).
    monkeypatch.setattr(journal, "FILE_BYTES", len(encode(text(0), AT)) + 10)
    for n in range(3):
        assert writer.store(text(n)) is None
    dropped = [0]

    def two_dropped() -> bool:
        # The sync thread closes each full file after its fsync: then it may go.
        dropped[0] += drain.drain().dropped
        return dropped[0] >= 2

    assert wait_for(two_dropped)
    assert dropped[0] == 2  # the third is in use, and so is a spare
    assert stored(db) == [text(n).sid for n in range(3)]
    assert 1 <= len(files(where)) <= 2
    assert [decode(line).sid for line in lines(where)] == [text(2).sid]


def test_a_drain_started_afresh_reads_everything_again_and_stores_nothing_twice(
    db: Database, settings: Settings, writer: JournalWriter, drain: Drain, where: Path
) -> None:
    for n in range(5):
        writer.store(text(n))
    assert drain.drain().stored == 5
    drain.release()  # the writer process ends (a crash): where it was is forgotten
    again = Drain(where, db, settings)
    assert again.acquire(wait=False)
    try:
        result = again.drain()
    finally:
        again.release()
    assert (result.stored, result.duplicates) == (0, 5)
    assert stored(db) == [text(n).sid for n in range(5)]
    assert len(reply_keys(db)) == 5


def test_stop_then_start_are_stored_in_order_and_replaying_them_changes_nothing(
    db: Database, settings: Settings, writer: JournalWriter, drain: Drain, where: Path
) -> None:
    for n, body in enumerate(["hi", "STOP", "are you there", "START", "hello again"]):
        writer.store(text(n, body=body))
    drain.drain()
    assert reply_keys(db) == [f"reply:{text(0).sid}", f"reply:{text(4).sid}"]
    drain.release()
    again = Drain(where, db, settings)
    assert again.acquire(wait=False)
    try:
        assert again.drain().duplicates == 5
    finally:
        again.release()
    with db.read() as session:
        row = session.scalars(select(OptOut)).one()
    assert (row.sender, row.number, row.opted_out) == (OURS, "+15557654321", False)
    assert len(reply_keys(db)) == 2


def test_lines_of_several_web_processes_are_stored_in_the_order_they_arrived(
    db: Database, drain: Drain, where: Path
) -> None:
    times = [datetime(2026, 11, 26, 12, 0, s, tzinfo=UTC) for s in range(4)]
    (where / "journal-101-1.jsonl").write_bytes(
        encode(text(1), times[0]) + encode(text(4), times[3])
    )
    (where / "journal-102-1.jsonl").write_bytes(
        encode(text(2), times[1]) + encode(text(3), times[2])
    )
    result = drain.drain()
    assert (result.stored, result.dropped) == (4, 2)  # nobody holds them: dropped once stored
    assert stored(db) == [text(n).sid for n in (1, 2, 3, 4)]
    assert files(where) == []


def test_a_line_being_written_waits_and_a_torn_one_is_set_aside_once_its_writer_is_gone(
    db: Database, drain: Drain, where: Path
) -> None:
    path = where / "journal-103-1.jsonl"
    whole, half = encode(text(1), AT), encode(text(2), AT)[:20]
    path.write_bytes(whole + half)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # its web process is still writing
    try:
        result = drain.drain()
        assert (result.stored, result.set_aside, result.dropped) == (1, 0, 0)
        assert bad_lines(where) == []
    finally:
        os.close(fd)  # the web process is gone, half-way through its line
    result = drain.drain()
    assert (result.set_aside, result.dropped) == (1, 1)
    (bad,) = bad_lines(where)
    assert bad["file"] == path.name and bad["line"] == half.decode() and "torn" in bad["error"]
    assert stored(db) == [text(1).sid]
    assert files(where) == []


def test_a_line_that_is_not_a_text_is_set_aside_and_the_rest_are_stored(
    db: Database, drain: Drain, where: Path
) -> None:
    path = where / "journal-104-1.jsonl"
    path.write_bytes(encode(text(1), AT) + b"garbage\n" + encode(text(2), AT))
    result = drain.drain()
    assert (result.stored, result.set_aside, result.dropped) == (2, 1, 1)
    (bad,) = bad_lines(where)
    assert (bad["file"], bad["line"]) == (path.name, "garbage")
    assert "not JSON" in bad["error"]
    assert stored(db) == [text(1).sid, text(2).sid]


def test_a_database_that_cannot_be_reached_loses_no_line(
    db: Database, settings: Settings, where: Path, tmp_path: Path
) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'no-such-folder' / 'app.db'}")  # cannot open
    away = Drain(where, broken, settings)
    assert away.acquire(wait=False)
    (where / "journal-105-1.jsonl").write_bytes(encode(text(1), AT) + encode(text(2), AT))
    try:
        with pytest.raises(OSError, match="No such file"):
            away.drain()
        assert bad_lines(where) == []
        assert files(where) == ["journal-105-1.jsonl"]
        away.db = db  # the database is back
        result = away.drain()
    finally:
        away.release()
        broken.dispose()
    assert (result.stored, result.dropped) == (2, 1)
    assert stored(db) == [text(1).sid, text(2).sid]


def test_a_failed_fsync_is_not_answered_from_the_journal_the_text_is_stored_here(
    db: Database, writer: JournalWriter, drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fdatasync

    def failing(fd: int) -> None:
        if "journal-" in os.readlink(f"/proc/self/fd/{fd}"):  # the disk fails the journal only
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(journal.os, "fdatasync", failing)
    result = writer.store(text(1))
    assert result is not None and result.created  # stored before the webhook answers
    assert stored(db) == [text(1).sid]
    monkeypatch.undo()
    assert writer.store(text(2)) is None  # a new file takes the next text
    assert drain.drain().stored == 1
    assert stored(db) == [text(1).sid, text(2).sid]


def test_the_drain_counts_the_webhooks_metrics_and_wakes_the_reply_workers(
    db: Database, writer: JournalWriter, drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    woken: list[str] = []
    monkeypatch.setattr(
        journal, "notify_enqueued", lambda: woken.append(threading.current_thread().name)
    )

    def count(outcome: str) -> float:
        return WEBHOOKS.labels("inbound", outcome)._value.get()

    before = count("stored"), count("duplicate")
    worker_waits = threading.Event()  # a reply worker of the web process, waiting for jobs
    jobs.subscribe(worker_waits)
    try:
        writer.store(text(1))
        writer.store(text(1))  # Twilio retried it
    finally:
        jobs.unsubscribe(worker_waits)
    drain.drain()
    assert (count("stored") - before[0], count("duplicate") - before[1]) == (1, 1)
    # The drain wakes its own process's workers, and pokes the web process's, whose listener
    # wakes them there (one process in this test: both show up).
    assert wait_for(lambda: "journal-wake" in woken)
    assert threading.current_thread().name in woken


def test_a_reply_worker_drains_what_a_stopped_server_left_unless_a_writer_process_drains(
    db: Database, settings: Settings, where: Path, tmp_path: Path
) -> None:
    app = create_app(settings)
    worker = Worker(app)
    where.mkdir()
    (where / "journal-106-1.jsonl").write_bytes(encode(text(1), AT))
    other = Drain(where, db, settings)
    assert other.acquire(wait=False)
    try:
        assert worker.drain_journal(force=True) is None  # the writer process drains it
    finally:
        other.release()
    result = worker.drain_journal(force=True)
    assert result is not None and (result.stored, result.dropped) == (1, 1)
    assert stored(db) == [text(1).sid]
    assert worker.drain_journal(force=True) is None  # nothing left
