"""The webhook spool: texts that arrive while the database is away are kept and stored later.

Three layers: the spool file format and its replay (threads, failures, corrupt lines); the
webhooks of an app whose database cannot be reached (a closed port on 127.0.0.1), replayed by a
worker of an app whose database works; and, on PostgreSQL only, real processes through a 30 s
outage of the PostgreSQL server during a burst of signed inbound webhooks.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from support import (
    CLI,
    PG_URL,
    SECRET,
    Live,
    Procs,
    database_url,
    make_settings,
    query,
    sandbox_query,
    wait_for,
)
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from twilio_chat import create_app
from twilio_chat.db.engine import get_db
from twilio_chat.jobs.worker import Worker
from twilio_chat.sandbox.state import inbound_form
from twilio_chat.settings import Settings
from twilio_chat.twilio import spool

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


# Helpers ------------------------------------------------------------------------------------


def _form(sid: str | None = None, body: str = "hello") -> dict[str, str]:
    sid = sid or "SM" + uuid.uuid4().hex
    return {"MessageSid": sid, "From": "+15551230001", "To": "+15005550006", "Body": body}


def _append(folder: Path, n: int, pid: int | None = None, kind: str = "inbound") -> list[str]:
    """Spool n inbound webhooks (as process `pid` if given); return their sids in order."""
    sids = []
    for _ in range(n):
        form = _form()
        if pid is None:
            spool.append(folder, kind, form, {})
        else:
            with _as_pid(pid):
                spool.append(folder, kind, form, {})
        sids.append(form["MessageSid"])
    return sids


@contextmanager
def _as_pid(pid: int) -> Iterator[None]:
    """Make spool.append write the file of another process id."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spool.os, "getpid", lambda: pid)
        yield


class Collect:
    """A replay handler that records the sids it handled, and can fail on a chosen one."""

    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.sids: list[str] = []
        self.entries: list[spool.Entry] = []
        self.fail_on = fail_on
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, entry: spool.Entry) -> None:
        if entry.form["MessageSid"] == self.fail_on:
            raise sa_exc.OperationalError("INSERT", {}, Exception("connection refused"))
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.sids.append(entry.form["MessageSid"])
            self.entries.append(entry)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _bad_lines(folder: Path) -> list[dict[str, Any]]:
    path = folder / spool.BAD_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# The spool file and its replay --------------------------------------------------------------


def test_append_writes_one_fsynced_json_line_per_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "spool"
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(spool.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    form = {**_form(body="zażółć 😀"), "MediaUrl0": "https://api.twilio.com/x"}
    path = spool.append(folder, "status", form, {"mid": "42"})
    assert path == folder / f"spool-{os.getpid()}.jsonl"
    assert len(synced) >= 2  # the line, and the folder the new file appeared in
    synced.clear()
    spool.append(folder, "inbound", _form(), {"mid": "²"})
    assert len(synced) == 1  # the file exists now: the line alone
    lines = path.read_bytes().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["kind"] == "status" and first["form"] == form and first["mid"] == 42
    assert second["kind"] == "inbound" and second["mid"] is None
    assert first["at"] <= second["at"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    with pytest.raises(ValueError, match="unknown spool kind"):
        spool.append(folder, "other", form, {})


def test_a_line_survives_its_process_being_killed_right_after_the_write(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    script = (
        "import os, signal, sys\n"
        "from twilio_chat.twilio import spool\n"
        "spool.append(sys.argv[1], 'inbound', {'MessageSid': 'SMkilled', 'From': '+1'}, {})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL
    handler = Collect()
    assert spool.pending(folder)
    result = spool.replay(folder, handler)
    assert handler.sids == ["SMkilled"] and result.replayed == 1
    assert _files(folder) == [] and not spool.pending(folder)


def test_replay_keeps_the_order_across_processes_and_deletes_what_it_handled(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "spool"
    expected = []
    for i in range(30):  # three "processes" taking turns
        expected += _append(folder, 1, pid=1000 + i % 3)
    assert _files(folder) == ["spool-1000.jsonl", "spool-1001.jsonl", "spool-1002.jsonl"]
    handler = Collect()
    result = spool.replay(folder, handler)
    assert handler.sids == expected
    assert (result.replayed, result.set_aside, result.busy, result.error) == (30, 0, False, None)
    assert _files(folder) == []
    again = spool.replay(folder, handler)
    assert again.replayed == 0 and handler.sids == expected


def test_a_failing_handler_stops_and_keeps_the_rest_for_next_time(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    expected = []
    for i in range(10):
        expected += _append(folder, 1, pid=2000 + i % 2)
    failing = Collect(fail_on=expected[4])
    result = spool.replay(folder, failing)
    assert failing.sids == expected[:4]
    assert result.replayed == 4 and isinstance(result.error, sa_exc.OperationalError)
    kept = _files(folder)
    assert len(kept) == 2 and all(".replaying-" in name for name in kept)
    # Texts keep coming while the database is away: they go to a fresh file, after the rest.
    later = _append(folder, 3, pid=2000)
    assert "spool-2000.jsonl" in _files(folder)
    # Still away: nothing is handled twice, nothing is lost, no new file is taken.
    assert spool.replay(folder, Collect(fail_on=expected[4])).replayed == 0
    assert len(_files(folder)) == 3
    handler = Collect()
    result = spool.replay(folder, handler)
    assert handler.sids == expected[4:] + later
    assert result.replayed == 9 and result.error is None
    assert _files(folder) == []


def test_a_replay_left_by_a_dead_replayer_is_replayed_first(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    older = _append(folder, 3, pid=3000)
    # A replayer took the file, then died (say pid 99999, or a pid reused since).
    (folder / "spool-3000.jsonl").rename(folder / "spool-3000.jsonl.replaying-99999-0")
    (folder / "spool-3000.jsonl.replaying-99999-0.tmp").write_text("half a rewrite")
    newer = _append(folder, 2, pid=3000)
    handler = Collect()
    assert spool.replay(folder, handler).replayed == 5
    assert handler.sids == older + newer
    assert _files(folder) == []


def test_webhooks_spooled_during_a_replay_wait_for_the_next_one(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    first = _append(folder, 3)
    arrived: list[str] = []

    def handler(entry: spool.Entry) -> None:
        if not arrived:
            arrived.extend(_append(folder, 2))
        seen.append(entry.form["MessageSid"])

    seen: list[str] = []
    spool.replay(folder, handler)
    assert seen == first and spool.pending(folder)
    spool.replay(folder, handler)
    assert seen == first + arrived and not spool.pending(folder)


def test_two_replayers_never_handle_the_same_line(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    handler = Collect(delay=0.001)
    written: dict[int, list[str]] = {}
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            written[n] = [sid for _ in range(60) for sid in _append(folder, 1)]
        except BaseException as exc:
            errors.append(exc)

    def replay() -> None:
        try:
            while not (writers_done.is_set() and not spool.pending(folder)):
                spool.replay(folder, handler)
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    replayers = [threading.Thread(target=replay) for _ in range(3)]
    for thread in writers + replayers:
        thread.start()
    for thread in writers:
        thread.join(60)
    writers_done.set()
    for thread in replayers:
        thread.join(60)
    assert not errors
    counts = Counter(handler.sids)
    assert [sid for sid, n in counts.items() if n > 1] == []
    assert set(counts) == {sid for sids in written.values() for sid in sids}
    position = {sid: i for i, sid in enumerate(handler.sids)}
    for sids in written.values():  # each writer's texts in the order it spooled them
        assert [position[s] for s in sids] == sorted(position[s] for s in sids)
    assert _files(folder) == []


def test_a_busy_replay_lock_means_someone_else_is_replaying(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    _append(folder, 2)
    fd = os.open(folder / "replay.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        handler = Collect()
        result = spool.replay(folder, handler)
        assert result.busy and handler.sids == []
    finally:
        os.close(fd)
    assert spool.replay(folder, Collect()).replayed == 2
    assert spool.replay(tmp_path / "missing", Collect()).replayed == 0


def test_corrupt_lines_are_set_aside_and_never_stop_the_replay(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    good = _append(folder, 1, pid=4000)
    with (folder / "spool-4000.jsonl").open("ab") as fh:
        fh.write(b"this is not json\n")
        fh.write(b"\n")
        fh.write(b'{"kind": "fax", "form": {"MessageSid": "SM1"}, "mid": null, "at": ""}\n')
        fh.write(b'{"kind": "inbound", "form": {"From": "+1"}, "mid": null, "at": ""}\n')
        fh.write(b"\xff\xfe\n")
    good += _append(folder, 1, pid=4000)
    with (folder / "spool-4000.jsonl").open("ab") as fh:
        fh.write(b'{"kind": "inbound", "form": {"MessageSid": "SMhalf"')  # a writer died here
    rejected = _append(folder, 1, pid=4001)[0]
    good += _append(folder, 1, pid=4001)

    def handler(entry: spool.Entry) -> None:
        if entry.form["MessageSid"] == rejected:
            raise spool.BadEntry("the handler cannot use it")
        seen.append(entry.form["MessageSid"])

    seen: list[str] = []
    result = spool.replay(folder, handler)
    assert seen == good
    assert (result.replayed, result.set_aside, result.error) == (3, 6, None)
    bad = _bad_lines(folder)
    assert [b["file"].split(".")[0] for b in bad] == ["spool-4000"] * 5 + ["spool-4001"]
    assert "Expecting value" in bad[0]["error"] and bad[0]["line"] == "this is not json"
    assert "unknown kind 'fax'" in bad[1]["error"]
    assert "no MessageSid" in bad[2]["error"]
    assert bad[3]["error"].startswith("line 6: ")  # not UTF-8
    assert "incomplete line" in bad[4]["error"] and "SMhalf" in bad[4]["line"]
    assert bad[5]["error"] == "the handler cannot use it" and rejected in bad[5]["line"]
    assert _files(folder) == [spool.BAD_FILE]


def test_a_writer_that_finds_half_a_line_keeps_its_own_line_whole(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    # A process that had our pid died mid-write.
    (folder / f"spool-{os.getpid()}.jsonl").write_bytes(b'{"kind": "inbound", "fo')
    sid = _append(folder, 1)[0]
    handler = Collect()
    result = spool.replay(folder, handler)
    assert handler.sids == [sid] and result.set_aside == 1


def test_only_connection_and_operational_errors_count_as_the_database_being_away() -> None:
    orig = Exception("boom")
    assert spool.database_unavailable(sa_exc.OperationalError("SELECT 1", {}, orig))
    assert spool.database_unavailable(sa_exc.InterfaceError("SELECT 1", {}, orig))
    assert spool.database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    invalidated = sa_exc.DBAPIError("SELECT 1", {}, orig, connection_invalidated=True)
    assert spool.database_unavailable(invalidated)
    assert not spool.database_unavailable(sa_exc.DBAPIError("SELECT 1", {}, orig))
    assert not spool.database_unavailable(sa_exc.IntegrityError("INSERT", {}, orig))
    assert not spool.database_unavailable(sa_exc.ProgrammingError("SELECT", {}, orig))
    assert not spool.database_unavailable(ValueError("no"))
    assert spool.parse_mid("12") == 12
    assert spool.parse_mid("²") is None and spool.parse_mid("1" * 19) is None
    assert spool.parse_mid(None) is None and spool.parse_mid("") is None


# Webhooks while the database is away --------------------------------------------------------


def _free_port() -> int:
    """A port nothing listens on now: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class DownApp:
    """An app whose database cannot be reached, served on 127.0.0.1."""

    app: Flask
    url: str
    settings: Settings

    def post(self, path: str, form: dict[str, str]) -> requests.Response:
        """Post a form signed as Twilio signs it."""
        url = self.url + path
        signature = RequestValidator(self.settings.auth_token).compute_signature(url, form)
        return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)


@pytest.fixture
def down_factory(db_path: Path) -> Iterator[Callable[..., DownApp]]:
    """Serve apps whose DATABASE_URL points at a closed port (nothing in start-up needs it)."""
    started: list[tuple[Any, threading.Thread, Flask]] = []

    def factory(**overrides: str) -> DownApp:
        server = make_server("127.0.0.1", 0, Flask("placeholder"), threaded=True)
        dead = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/x"
        settings = make_settings(db_path, APP_PORT=str(server.port), DATABASE_URL=dead, **overrides)
        app = create_app(settings)
        server.app = app
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((server, thread, app))
        return DownApp(app, f"http://127.0.0.1:{server.port}", settings)

    yield factory
    for server, thread, app in started:
        server.shutdown()
        thread.join(5)
        server.server_close()
        get_db(app).dispose()


def _spooled(kind: str) -> float:
    labels = {"kind": kind, "outcome": "spooled"}
    return REGISTRY.get_sample_value("twilio_chat_webhooks_total", labels) or 0.0


def test_webhooks_are_spooled_while_the_database_is_away_and_stored_once_later(
    down_factory: Callable[..., DownApp],
    live_factory: Callable[..., Live],
    db_path: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "shared-spool"
    down = down_factory(SPOOL_DIR=str(folder))
    texts = [
        inbound_form(
            down.settings.account_sid,
            "SM" + uuid.uuid4().hex,
            f"+1555400{1000 + i:04d}",
            down.settings.default_from or "",
            f"spooled text {i}",
            [],
        )
        for i in range(5)
    ]
    status = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
        "AccountSid": down.settings.account_sid,
    }
    inbound_before, status_before = _spooled("inbound"), _spooled("status")

    def post_everything() -> None:
        for form in [*texts, texts[0]]:  # Twilio's retry: the same sid twice
            answer = down.post("/twilio/inbound", form)
            assert answer.status_code == 200, answer.text
            assert answer.text == EMPTY_TWIML
            assert answer.headers["Content-Type"].startswith("text/xml")
        for _ in range(2):
            assert down.post("/twilio/status?mid=777", status).text == EMPTY_TWIML

    post_everything()
    assert _spooled("inbound") - inbound_before == 6
    assert _spooled("status") - status_before == 2
    lines = [
        json.loads(line)
        for path in sorted(folder.glob("spool-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert [line["kind"] for line in lines] == ["inbound"] * 6 + ["status"] * 2
    assert lines[0]["form"] == texts[0] and lines[-1]["mid"] == 777
    # Signatures and required fields are still checked first: nothing bad is spooled.
    assert down.post("/twilio/inbound", {"MessageSid": "SMx"}).status_code == 400
    bad = requests.post(down.url + "/twilio/inbound", data=texts[1], timeout=10)
    assert bad.status_code == 403
    assert _spooled("inbound") - inbound_before == 6

    # A worker of an app whose database works, sharing the spool, stores them.
    live = live_factory(SPOOL_DIR=str(folder))
    worker = Worker(live.app, name="spool-worker")
    result = worker.run_chore("spool-replay", force=True)
    assert result is not None and (result.replayed, result.set_aside) == (8, 0)
    assert not spool.pending(folder)
    sids = [t["MessageSid"] for t in texts]

    def stored() -> Counter[str]:
        rows = query(db_path, "SELECT sid FROM messages WHERE direction='inbound'")
        return Counter(r[0] for r in rows)

    assert stored() == Counter(sids)
    jobs = query(db_path, "SELECT unique_key FROM jobs WHERE kind='reply'")
    assert sorted(r[0] for r in jobs) == sorted(f"reply:{s}" for s in sids)
    events = query(
        db_path, "SELECT status FROM status_events WHERE message_sid=?", status["MessageSid"]
    )
    assert events == [("delivered",)]
    assert live.run_jobs() == 5

    def sends() -> Counter[str]:
        rows = sandbox_query(
            db_path, "SELECT to_number FROM sandbox_messages WHERE direction='outbound-api'"
        )
        return Counter(r[0] for r in rows)

    assert sends() == Counter(t["From"] for t in texts)

    # The same webhooks spooled and replayed again change nothing.
    post_everything()
    again = worker.run_chore("spool-replay", force=True)
    assert again is not None and again.replayed == 8
    assert stored() == Counter(sids)
    assert live.run_jobs() == 0
    assert sends() == Counter(t["From"] for t in texts)
    kept = query(db_path, "SELECT id FROM status_events WHERE message_sid=?", status["MessageSid"])
    assert len(kept) == 1
    assert _bad_lines(folder) == []


def test_a_webhook_that_cannot_be_spooled_either_is_answered_503(
    down_factory: Callable[..., DownApp], tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    down = down_factory(SPOOL_DIR=str(not_a_folder))
    form = inbound_form(
        down.settings.account_sid, "SM" + uuid.uuid4().hex, "+15554001999", "+15005550006", "x", []
    )
    answer = down.post("/twilio/inbound", form)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "service_unavailable"


def test_the_worker_loop_rides_out_an_outage_without_spinning_then_replays(
    down_factory: Callable[..., DownApp],
    live_factory: Callable[..., Live],
    db_path: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "spool"
    down = down_factory(SPOOL_DIR=str(folder))
    worker = Worker(down.app, name="outage-worker")
    tries: list[float] = []
    run_once = worker.run_once

    def counted() -> bool:
        tries.append(time.monotonic())
        return run_once()

    worker.run_once = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        form = inbound_form(
            down.settings.account_sid,
            "SM" + uuid.uuid4().hex,
            "+15554002001",
            "+15005550006",
            "during the outage",
            [],
        )
        assert down.post("/twilio/inbound", form).status_code == 200
        time.sleep(2.0)
        assert thread.is_alive()
        # WORKER_POLL_SECONDS is 0.05 in tests: without backing off it would try ~40 times.
        assert 2 <= len(tries) <= 12, len(tries)
        # The database is back (here: the worker is given one that works).
        live = live_factory(SPOOL_DIR=str(folder))
        worker.db = get_db(live.app)
        wait_for(
            lambda: query(db_path, "SELECT id FROM messages WHERE sid=?", form["MessageSid"]),
            timeout=10,
        )
        wait_for(lambda: not spool.pending(folder), timeout=5)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


# A real PostgreSQL outage with real processes -----------------------------------------------

OUTAGE_SECONDS = 30
BURST_INTERVAL = 0.1  # one signed inbound webhook every 0.1 s, from before to after the outage
OUTAGE_ENV = {
    "SECRET_KEY": SECRET,
    "APP_ENV": "test",
    "ADMIN_PASSWORD": "outage-test-admin-password",
    "SANDBOX_CALLBACK_DELAY": "0.01",
    "JOB_LEASE_SECONDS": "5",
    "JOB_MAX_ATTEMPTS": "20",
    "WORKER_POLL_SECONDS": "0.05",
    "JOB_RETRY_BASE_SECONDS": "0.5",
    "AUTO_REPLY_MAX_PER_HOUR": "1000",
    "CHAT_MODE": "echo",
}


def _pg_cluster() -> tuple[str, str]:
    """Return (version, name) of the local cluster serving TEST_DATABASE_URL's port."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("needs Debian's postgresql-common (pg_ctlcluster) to stop the server")
    url = make_url(PG_URL or "")
    if (url.host or "127.0.0.1") not in ("127.0.0.1", "localhost"):
        pytest.skip("TEST_DATABASE_URL is not a PostgreSQL server on this machine")
    port = str(url.port or 5432)
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return fields[0], fields[1]
    pytest.skip(f"no local PostgreSQL cluster listens on port {port}")


def _pg_ready(port: int) -> bool:
    answer = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)], check=False, timeout=30
    )
    return answer.returncode == 0


def _pg_ctl(version: str, cluster: str, action: str, *extra: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action, *extra],
        check=True,
        timeout=120,
        capture_output=True,
    )


@contextmanager
def _pg_stopped(version: str, cluster: str, port: int) -> Iterator[None]:
    """Stop the PostgreSQL cluster; ALWAYS start it again and wait until it answers."""
    _pg_ctl(version, cluster, "stop", "-m", "fast")
    try:
        yield
    finally:
        for _ in range(3):
            try:
                _pg_ctl(version, cluster, "start")
                break
            except subprocess.CalledProcessError:
                time.sleep(1)
        deadline = time.monotonic() + 60
        while not _pg_ready(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pg_ready(port), "PostgreSQL did not come back"


@dataclass
class Sent:
    """One webhook of the burst and how it was answered."""

    form: dict[str, str]
    status: int | None
    during_outage: bool


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    PG_URL is None,
    reason="stops PostgreSQL: runs only with TEST_DATABASE_URL set (CI's PostgreSQL pass)",
)
@pytest.mark.skipif(
    int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1) > 1,
    reason="stops PostgreSQL for 30 s: cannot run beside other tests (pytest -n)",
)
def test_a_postgresql_outage_during_a_burst_loses_no_text_and_answers_each_once(
    tmp_path: Path, db_path: Path
) -> None:
    version, cluster = _pg_cluster()
    pg_port = make_url(PG_URL or "").port or 5432
    procs = Procs(_outage_env(tmp_path, db_path), tmp_path)
    try:
        _run_outage(procs, version, cluster, pg_port, tmp_path, db_path)
    except BaseException:
        for proc in procs.started:
            print(f"----- {proc.name} (exit {proc.popen.poll()}), last lines -----")
            print(proc.tail(60))
        raise
    finally:
        for proc in reversed(procs.started):
            proc.stop()


def _outage_env(tmp_path: Path, db_path: Path) -> dict[str, str]:
    ours = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("TWILIO_")}
    env.update(OUTAGE_ENV)
    env.update(
        DB_PATH=str(db_path),
        APP_PORT=str(_free_port()),
        DATABASE_URL=database_url(db_path) or "",
        SPOOL_DIR=str(tmp_path / "spool"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _answered(db_path: Path) -> int:
    rows = sandbox_query(
        db_path, "SELECT count(*) FROM sandbox_messages WHERE direction='outbound-api'"
    )
    return int(rows[0][0])


def _run_outage(
    procs: Procs, version: str, cluster: str, pg_port: int, tmp_path: Path, db_path: Path
) -> None:
    assert CLI.exists()
    port = procs.env["APP_PORT"]
    settings = make_settings(
        db_path, **{k: v for k, v in OUTAGE_ENV.items() if k != "SECRET_KEY"}, APP_PORT=port
    )
    validator = RequestValidator(settings.auth_token)
    inbound_url = f"{settings.base_url}/twilio/inbound"
    server = procs.start("server", "run", "--no-worker", "--host", "127.0.0.1")
    deadline = time.monotonic() + 30
    while True:
        assert server.popen.poll() is None, f"the server exited:\n{server.tail()}"
        try:
            if requests.get(f"{settings.base_url}/healthz", timeout=2).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or still booting
            pass
        assert time.monotonic() < deadline, f"/healthz did not answer:\n{server.tail()}"
        time.sleep(0.05)
    # Started once the server is up: two processes noting the reply mode of a fresh PostgreSQL
    # database at the same moment can collide (reply_config.note_start).
    worker = procs.start("worker", "worker")

    sent: list[Sent] = []
    outage = threading.Event()
    stop_burst = threading.Event()

    def burst() -> None:
        session = requests.Session()
        i = 0
        while not stop_burst.is_set():
            form = inbound_form(
                settings.account_sid,
                "SM" + uuid.uuid4().hex,
                f"+1555300{1000 + i:04d}",  # one number per text; none ends in 0000-0008
                settings.default_from or "",
                f"outage check {i:03d} {uuid.uuid4().hex[:8]}",
                [],
            )
            signature = validator.compute_signature(inbound_url, form)
            during = outage.is_set()
            try:
                answer = session.post(
                    inbound_url, data=form, headers={"X-Twilio-Signature": signature}, timeout=20
                )
                status: int | None = answer.status_code
            except requests.RequestException:
                status = None
            sent.append(Sent(form, status, during))
            i += 1
            stop_burst.wait(BURST_INTERVAL)

    thread = threading.Thread(target=burst, name="burst", daemon=True)
    thread.start()
    try:
        # The outage starts once the worker runs and texts are being answered.
        deadline = time.monotonic() + 60
        while _answered(db_path) < 10:
            assert worker.popen.poll() is None, f"the worker exited:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"no replies before the outage:\n{worker.tail()}"
            time.sleep(0.1)
        with _pg_stopped(version, cluster, pg_port):
            outage.set()
            time.sleep(OUTAGE_SECONDS)
            outage.clear()
            assert thread.is_alive() and worker.popen.poll() is None
        time.sleep(3)
    finally:
        stop_burst.set()
        thread.join(30)
    assert server.popen.poll() is None and worker.popen.poll() is None

    acknowledged = [s.form for s in sent if s.status == 200]
    assert len(acknowledged) == len(sent), Counter(s.status for s in sent)
    spooled = server.log_path.read_text(errors="replace").count("spooled for replay")
    during = sum(s.during_outage for s in sent)
    # Every text sent while PostgreSQL was stopped was spooled (give or take the one in flight
    # when the outage ended); a few more may have been, as it went down or came back.
    assert during >= OUTAGE_SECONDS * 5 and spooled >= during - 1, (during, spooled)
    sids = {f["MessageSid"]: f for f in acknowledged}

    # Wait until every acknowledged text is stored and its reply sent, and the spool is empty.
    spool_dir = Path(procs.env["SPOOL_DIR"])
    deadline = time.monotonic() + 120
    while True:
        row = query(
            db_path,
            "SELECT (SELECT count(*) FROM messages WHERE direction='inbound'),"
            " (SELECT count(*) FROM messages WHERE direction='outbound' AND sid IS NOT NULL),"
            " (SELECT count(*) FROM jobs WHERE status IN ('queued','running'))",
        )[0]
        settled = row[0] >= len(sids) and row[1] >= len(sids) and row[2] == 0
        if settled and not spool.pending(spool_dir):
            break
        assert worker.popen.poll() is None, f"the worker exited:\n{worker.tail()}"
        assert time.monotonic() < deadline, f"not settled: {row}\n{worker.tail()}"
        time.sleep(0.2)

    inbound = Counter(
        r[0] for r in query(db_path, "SELECT sid FROM messages WHERE direction='inbound'")
    )
    assert inbound == Counter(sids.keys()), "texts lost or stored twice"
    replies = query(
        db_path,
        "SELECT reply_to_sid, contact_number, body, status FROM messages "
        "WHERE direction='outbound'",
    )
    assert Counter(r[0] for r in replies) == Counter(sids.keys()), "texts answered not exactly once"
    for reply_to, to, body, status in replies:
        assert (to, body) == (sids[reply_to]["From"], f"Echo: {sids[reply_to]['Body']}")
        assert status not in ("pending", "failed"), (reply_to, status)
    sends = Counter(
        r[0]
        for r in sandbox_query(
            db_path, "SELECT to_number FROM sandbox_messages WHERE direction='outbound-api'"
        )
    )
    assert sends == Counter(f["From"] for f in acknowledged), "the sandbox sent not exactly once"
    assert _bad_lines(spool_dir) == []
    print(
        f"{len(sent)} webhooks, {during} while PostgreSQL was stopped, "
        f"{spooled} spooled; every one stored once and answered once"
    )
