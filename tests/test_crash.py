"""Crash test with real processes: a reply worker is SIGKILLed half-way through 200 replies.

The web server (`twilio-chat run --no-worker`, with the built-in Twilio sandbox) and the reply
workers (`twilio-chat worker`) are separate processes on one SQLite file. 200 signed inbound
webhooks arrive; while the first worker is in the middle of a reply job it is frozen, checked
and killed with SIGKILL, and a second worker takes over (the killed worker's job once its lease
runs out). In the end every inbound text has exactly one reply: one send in the sandbox's
record, one outbound row pointing at it, and one finished job.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support import ENV, Proc, Procs, make_settings, query, sandbox_query, wait_healthy
from twilio.request_validator import RequestValidator

from twilio_chat.sandbox.state import inbound_form
from twilio_chat.settings import Settings

TEXTS = 200
NUMBERS = 100  # each number texts twice, so replies to one number are told apart by body
KILL_AT = 60  # replies in the sandbox before the first worker is killed


def _sandbox_sends(db_path: Path) -> int:
    rows = sandbox_query(
        db_path, "SELECT count(*) FROM sandbox_messages WHERE direction='outbound-api'"
    )
    return int(rows[0][0])


EDGE = "the sandbox accepted the send; the worker had not recorded its answer"


@dataclass(frozen=True)
class Killed:
    """What the first worker was doing when it was killed."""

    job_id: int
    inbound_sid: str
    phase: str
    sends_before: int


def _held_job(db_path: Path, pid: int, reply_of: dict[str, str]) -> tuple[int, str, str] | None:
    """Return the reply job worker `pid` holds (id, inbound sid, how far it got), if any."""
    held = query(
        db_path,
        "SELECT id, payload FROM jobs WHERE kind='reply' AND status='running' AND locked_by LIKE ?",
        f"%:{pid}:%",
    )
    if not held:
        return None
    job_id, payload = held[0]
    message_id = (json.loads(payload) if isinstance(payload, str) else payload)["message_id"]
    sid = str(query(db_path, "SELECT sid FROM messages WHERE id=?", message_id)[0][0])
    row = query(db_path, "SELECT sent_at FROM messages WHERE reply_to_sid=?", sid)
    accepted = sandbox_query(
        db_path,
        "SELECT count(*) FROM sandbox_messages WHERE direction='outbound-api' AND body=?",
        reply_of[sid],
    )[0][0]
    if not row:
        phase = "claimed; no reply row yet"
    elif row[0][0] is not None:  # sent_at is written only by the worker, after Twilio answered
        phase = "the worker recorded the send; the job is not marked done yet"
    elif accepted:
        phase = EDGE
    else:
        phase = "reply row written; the sandbox has not accepted a send yet"
    return int(job_id), sid, phase


def _kill_mid_job(worker: Proc, db_path: Path, reply_of: dict[str, str]) -> Killed:
    """Freeze the worker until it is caught holding a reply job, then SIGKILL it there.

    For up to 3 s it waits for the riskiest moment (Twilio accepted the send, the worker has
    not written down the answer); after that any moment inside a reply job will do.
    """
    pid = worker.popen.pid
    deadline = time.monotonic() + 3
    for attempt in range(2000):
        worker.popen.send_signal(signal.SIGSTOP)
        held = _held_job(db_path, pid, reply_of)
        if held is not None and (held[2] == EDGE or time.monotonic() > deadline):
            sends = _sandbox_sends(db_path)
            worker.popen.send_signal(signal.SIGKILL)
            worker.popen.wait(10)
            return Killed(held[0], held[1], held[2], sends)
        worker.popen.send_signal(signal.SIGCONT)
        time.sleep(0.001 * (attempt % 7))
    raise AssertionError(f"never caught the worker holding a reply job:\n{worker.tail()}")


def _post_inbound(settings: Settings, validator: RequestValidator, form: dict[str, str]) -> None:
    """Post one inbound webhook signed as Twilio signs it; it must answer 200."""
    url = f"{settings.base_url}/twilio/inbound"
    signature = validator.compute_signature(url, form)
    answer = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)
    assert answer.status_code == 200, (form["MessageSid"], answer.status_code, answer.text[:300])


def _wait_then_kill(worker: Proc, db_path: Path, reply_of: dict[str, str]) -> Killed:
    """Wait until KILL_AT replies went out, then kill the worker in the middle of a job."""
    deadline = time.monotonic() + 30
    while _sandbox_sends(db_path) < KILL_AT:
        assert worker.popen.poll() is None, f"{worker.name} exited:\n{worker.tail()}"
        assert time.monotonic() < deadline, f"{worker.name} is stuck:\n{worker.tail()}"
        time.sleep(0.02)
    return _kill_mid_job(worker, db_path, reply_of)


@pytest.mark.slow
@pytest.mark.timeout(100)
def test_a_worker_killed_mid_reply_leaves_every_text_answered_exactly_once(
    procs: Procs, db_path: Path
) -> None:
    port = int(procs.env["APP_PORT"])
    settings = make_settings(
        db_path, **{k: v for k, v in ENV.items() if k != "SECRET_KEY"}, APP_PORT=str(port)
    )
    assert settings.sandbox and settings.base_url == f"http://127.0.0.1:{port}"
    validator = RequestValidator(settings.auth_token)
    our_number = settings.default_from or ""

    started = time.monotonic()
    server = procs.start("server", "run", "--no-worker", "--host", "127.0.0.1")
    first = procs.start("worker-1", "worker")  # it finds no job until the webhooks come
    wait_healthy(server, settings.base_url)

    # 100 numbers (+15552001000…+15552001099: none ends in the sandbox's failing 0000-0008),
    # each texting twice; every body is unique, so its echo names the text it answers.
    texts: list[dict[str, str]] = []
    for i in range(TEXTS):
        sid = "SM" + uuid.uuid4().hex
        sender = f"+1555200{1000 + i % NUMBERS:04d}"
        body = f"crash check {i:03d} {uuid.uuid4().hex[:8]}"
        texts.append(inbound_form(settings.account_sid, sid, sender, our_number, body, []))
    reply_of = {t["MessageSid"]: f"Echo: {t['Body']}" for t in texts}
    sender_of = {t["MessageSid"]: t["From"] for t in texts}

    # Four clients post the webhooks while the worker answers; the main thread kills it.
    with ThreadPoolExecutor(max_workers=4) as pool:
        posted = [pool.submit(_post_inbound, settings, validator, form) for form in texts]
        killed = _wait_then_kill(first, db_path, reply_of)
        for future in posted:
            future.result()
    assert first.popen.returncode == -signal.SIGKILL
    assert killed.sends_before < TEXTS, "the first worker finished before it could be killed"
    print(
        f"{time.monotonic() - started:.1f}s: killed worker-1 after {killed.sends_before} sends, "
        f"in job {killed.job_id}: {killed.phase}"
    )

    second = procs.start("worker-2", "worker")

    # Wait until no job is left and every reply has reached a final status.
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        assert second.popen.poll() is None, f"worker-2 exited:\n{second.tail()}"
        waiting = query(
            db_path,
            "SELECT (SELECT count(*) FROM jobs WHERE status IN ('queued','running')),"
            " (SELECT count(*) FROM messages WHERE direction='outbound'"
            "   AND status NOT IN ('delivered', 'undelivered', 'failed', 'canceled')),"
            " (SELECT count(*) FROM messages WHERE direction='outbound')",
        )[0]
        if waiting[0] == 0 and waiting[1] == 0 and waiting[2] >= TEXTS:
            break
        time.sleep(0.1)

    print(f"{time.monotonic() - started:.1f}s: settled")

    # The sandbox (standing in for Twilio) sent exactly one reply per inbound text.
    sends = sandbox_query(
        db_path,
        "SELECT sid, to_number, from_number, body, status FROM sandbox_messages "
        "WHERE direction='outbound-api'",
    )
    per_text = Counter((to, body) for _sid, to, _from, body, _status in sends)
    expected = Counter((sender_of[s], reply_of[s]) for s in reply_of)
    duplicates = {k: n for k, n in per_text.items() if n > 1}
    assert not duplicates, f"replies sent more than once: {duplicates}"
    assert per_text == expected, (
        f"missing: {expected - per_text}; unexpected: {per_text - expected}"
    )
    assert Counter(to for _sid, to, _f, _b, _s in sends) == Counter(sender_of.values())
    assert {(frm, status) for _sid, _to, frm, _b, status in sends} == {(our_number, "delivered")}

    # The app: 200 inbound rows, 200 replies each pointing at one of them and at one send.
    inbound = query(db_path, "SELECT sid, contact_number FROM messages WHERE direction='inbound'")
    assert Counter(inbound) == Counter(sender_of.items())
    outbound = query(
        db_path,
        "SELECT reply_to_sid, sid, contact_number, body, status, source FROM messages "
        "WHERE direction='outbound'",
    )
    assert len(outbound) == TEXTS
    replied, texted = Counter(r[0] for r in outbound), Counter(list(reply_of))
    assert replied == texted, f"missing replies: {texted - replied}; extra: {replied - texted}"
    recorded = Counter(r[1] for r in outbound)
    remote = Counter(s[0] for s in sends)
    assert recorded == remote, f"sids not recorded: {remote - recorded}; extra: {recorded - remote}"
    for reply_to, _sid, to, body, status, source in outbound:
        assert (to, body, status, source) == (
            sender_of[reply_to],
            reply_of[reply_to],
            "delivered",
            "engine",
        )

    # The jobs: one reply job per text, all done; the killed one was taken over after its lease.
    job_rows = query(db_path, "SELECT id, kind, unique_key, status, attempts, locked_by FROM jobs")
    assert sorted(r[2] for r in job_rows) == sorted(f"reply:{s}" for s in reply_of)
    assert {r[1] for r in job_rows} == {"reply"}
    not_done = [r for r in job_rows if r[3] != "done"]
    assert not not_done, f"jobs not done: {not_done[:5]}"
    taken_over = next(r for r in job_rows if r[0] == killed.job_id)
    assert taken_over[2] == f"reply:{killed.inbound_sid}"
    assert taken_over[4] == 2, taken_over  # one try by the killed worker, one by its successor
    assert f":{second.popen.pid}:" in taken_over[5]
    assert second.popen.poll() is None and server.popen.poll() is None
