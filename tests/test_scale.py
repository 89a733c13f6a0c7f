"""Many processes on one database: 2 web servers and several workers, 1000 signed webhooks.

On PostgreSQL 4 workers claim jobs with FOR UPDATE SKIP LOCKED; on SQLite 2 workers share the
file through WAL and BEGIN IMMEDIATE. Either way every text is stored once and answered
exactly once, and SQLite never reports "database is locked".
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import (
    ENV,
    Procs,
    database_url,
    free_port,
    make_settings,
    query,
    sandbox_query,
    wait_healthy,
)
from twilio.request_validator import RequestValidator

from twilio_chat.sandbox.state import inbound_form

TEXTS = 1000
NUMBERS = 250


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_web_processes_and_many_workers_answer_every_text_exactly_once(
    procs: Procs,
    db_path: Path,
) -> None:
    on_postgres = database_url(db_path) is not None
    workers = 4 if on_postgres else 2
    port1 = int(procs.env["APP_PORT"])
    port2 = free_port()
    settings = make_settings(
        db_path, **{k: v for k, v in ENV.items() if k != "SECRET_KEY"}, APP_PORT=str(port1)
    )
    public = settings.base_url  # both servers stand behind one public URL, as behind a balancer
    procs.env["PUBLIC_BASE_URL"] = public
    web1 = procs.start("web-1", "run", "--no-worker", "--host", "127.0.0.1")
    web2 = procs.start("web-2", "run", "--no-worker", "--host", "127.0.0.1", "--port", str(port2))
    for i in range(workers):
        procs.start(f"worker-{i + 1}", "worker")
    wait_healthy(web1, public)
    wait_healthy(web2, f"http://127.0.0.1:{port2}")

    validator = RequestValidator(settings.auth_token)
    url = f"{public}/twilio/inbound"
    texts = []
    for i in range(TEXTS):
        sender = f"+1555300{1000 + i % NUMBERS:04d}"
        body = f"scale {i:04d} {uuid.uuid4().hex[:6]}"
        texts.append(
            inbound_form(settings.account_sid, "SM" + uuid.uuid4().hex, sender, "", body, [])
        )
    for form in texts:
        form["To"] = settings.default_from or ""

    def post(index: int) -> int:
        form = texts[index]
        target = f"http://127.0.0.1:{port1 if index % 2 else port2}/twilio/inbound"
        signature = validator.compute_signature(url, form)
        answer = requests.post(
            target, data=form, headers={"X-Twilio-Signature": signature}, timeout=30
        )
        return answer.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(TEXTS)))
    assert Counter(statuses) == {200: TEXTS}
    posted = time.monotonic() - started

    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        waiting = query(
            db_path,
            "SELECT (SELECT count(*) FROM jobs WHERE status IN ('queued','running')),"
            " (SELECT count(*) FROM messages WHERE direction='outbound')",
        )[0]
        if waiting[0] == 0 and waiting[1] >= TEXTS:
            break
        for proc in procs.started:
            assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        time.sleep(0.5)
    answered = time.monotonic() - started
    print(f"{workers} workers: {TEXTS} webhooks in {posted:.1f}s, all answered in {answered:.1f}s")

    inbound = query(db_path, "SELECT sid FROM messages WHERE direction='inbound'")
    assert sorted(r[0] for r in inbound) == sorted(t["MessageSid"] for t in texts)
    replies = query(db_path, "SELECT reply_to_sid, body FROM messages WHERE direction='outbound'")
    assert Counter(r[0] for r in replies) == Counter({t["MessageSid"]: 1 for t in texts})
    sends = sandbox_query(
        db_path, "SELECT body FROM sandbox_messages WHERE direction='outbound-api'"
    )
    assert Counter(r[0] for r in sends) == Counter({f"Echo: {t['Body']}": 1 for t in texts})
    jobs = query(db_path, "SELECT status, count(*) FROM jobs GROUP BY status")
    assert dict(jobs) == {"done": TEXTS}
    workers_seen = query(db_path, "SELECT count(DISTINCT locked_by) FROM jobs")[0][0]
    assert workers_seen == workers  # every worker took part
    for proc in procs.started:
        assert "database is locked" not in proc.tail(100_000)
