"""Benchmark 2, reply latency: from the inbound webhook's answer to the sandbox's create call.

gunicorn with the production config (gunicorn.conf.py) serves the app on 127.0.0.1 with SQLite,
a reply worker thread in each of its processes (WORKER_ENABLED, as the one-container image runs)
and the built-in Twilio sandbox in the same server. The load, open-loop on a fixed schedule,
posts signed inbound webhooks at a steady rate, each from its own number (so the loop guard never
stops a reply), and notes the moment each is answered. The chat engine `echo` answers, so no
network is needed. The moment the sandbox received the reply's create call is its message's
`date_created` (microseconds, taken as the call comes in); each reply is linked to its text
through the app's `messages.reply_to_sid`. Every text must be answered exactly once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from twilio.request_validator import RequestValidator

from bench.common import (
    Figure,
    app_env,
    at_most,
    cpu_seconds,
    equal,
    free_port,
    gunicorn,
    inbound_webhook,
    log,
    percentile,
    profile,
    twilio_chat,
    write_result,
)

P50_TARGET_MS = 100
P99_TARGET_MS = 500


@dataclass
class Text:
    """One signed inbound webhook and what became of it."""

    sid: str
    sender: str
    form: dict[str, str]
    signature: str
    due: float = 0.0  # when the schedule says to send it (time.monotonic)
    late_ms: float = 0.0  # how late the load sent it
    answered_at: float = 0.0  # wall clock (time.time) when its answer arrived
    status: int = 0
    answer_ms: float = 0.0


def make_texts(url: str, token: str, count: int, batch: int) -> list[Text]:
    """Sign `count` inbound webhooks, each from its own number (`batch` keeps batches apart)."""
    validator = RequestValidator(token)
    texts = []
    for i in range(count):
        sid = f"SM{batch:02x}{i:030x}"
        sender = f"+1555{batch}{i:06d}"
        form = inbound_webhook(sid, sender, f"Hello, is the shop open today? ({i})")
        texts.append(Text(sid, sender, form, validator.compute_signature(url, form)))
    return texts


def send_open_loop(url: str, texts: list[Text], rate: float, threads: int = 64) -> float:
    """Post each text at its scheduled moment (rate per second), never waiting for answers."""
    local = threading.local()

    def post(text: Text) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.monotonic()
        text.late_ms = (started - text.due) * 1000
        try:
            answer = session.post(
                url, data=text.form, headers={"X-Twilio-Signature": text.signature}, timeout=30
            )
            text.status = answer.status_code
        except requests.RequestException:
            text.status = -1
        text.answered_at = time.time()
        text.answer_ms = (time.monotonic() - started) * 1000

    with ThreadPoolExecutor(max_workers=threads) as pool:
        start = time.monotonic() + 0.1
        for i, text in enumerate(texts):
            text.due = start + i / rate
            pause = text.due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pool.submit(post, text)
    return time.monotonic() - start


def _query(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one read-only query on the SQLite file while the server may be writing."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def sandbox_db(db_path: Path) -> Path:
    """Return the sandbox's own SQLite file: sandbox.db beside the app's (SANDBOX_DB_PATH unset)."""
    return db_path.parent / "sandbox.db"


def wait_replies(db_path: Path, expected: int, timeout: float) -> int:
    """Wait until `expected` replies reached the sandbox and no job waits; return the count."""
    deadline = time.monotonic() + timeout
    created = 0
    while time.monotonic() < deadline:
        created = (
            _query(
                sandbox_db(db_path),
                "SELECT count(*) FROM sandbox_messages WHERE direction = 'outbound-api'",
            )[0][0]
            if sandbox_db(db_path).exists()
            else 0
        )
        waiting = _query(
            db_path, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
        )[0][0]
        if created >= expected and waiting == 0:
            return int(created)
        time.sleep(0.25)
    return int(created)


def _epoch(value: str) -> float:
    """Turn a timestamp SQLite holds (naive UTC, microseconds) into seconds since the epoch."""
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def analyse(
    texts: list[Text], reached: dict[str, tuple[str, float]], per_number: Counter[str]
) -> dict[str, Any]:
    """Match each text to its reply at the sandbox; return the latencies and the misses."""
    latencies = []
    missing = duplicates = wrong = 0
    for text in texts:
        if per_number[text.sender] > 1:
            duplicates += 1
        found = reached.get(text.sid)
        if found is None:
            missing += 1
            continue
        if found[0] != text.sender:
            wrong += 1
        latencies.append((found[1] - text.answered_at) * 1000)
    answers = [t.answer_ms for t in texts]
    return {
        "texts_sent": len(texts),
        "webhooks_not_200": sum(1 for t in texts if t.status != 200),
        "replies_matched": len(latencies),
        "unanswered": missing,
        "answered_twice": duplicates,
        "answered_to_wrong_number": wrong,
        "reply_latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies, default=0.0), 1),
        },
        "webhook_answer_ms": {
            "p50": round(percentile(answers, 50), 2),
            "p99": round(percentile(answers, 99), 2),
            "max": round(max(answers, default=0.0), 2),
        },
        "load_sent_late_ms_p99": round(percentile([t.late_ms for t in texts], 99), 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the reply-latency benchmark and write its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="inbound webhooks per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long the load runs")
    parser.add_argument(
        "--light-rate", type=float, default=10, help="the rate of a first, light phase (0: none)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--profile", action="store_true", help="py-spy the web processes")
    parser.add_argument("--no-write", action="store_true", help="print, do not write a result")
    args = parser.parse_args(argv)

    load_average = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    port = free_port()
    db_path = work / "app.db"
    env = app_env(port, db_path, CHAT_MODE="echo", AUTO_REPLY_MAX_PER_HOUR="1000")
    twilio_chat(env, "prepare")
    from twilio_chat.settings import build_settings

    settings = build_settings(env)
    url = f"http://127.0.0.1:{port}/twilio/inbound"
    count = int(args.rate * args.seconds)
    warm = make_texts(url, settings.auth_token, 50, 1)
    light = make_texts(url, settings.auth_token, int(args.light_rate * 10), 3)
    texts = make_texts(url, settings.auth_token, count, 2)

    server = gunicorn("app", env, work)
    try:
        server.wait_ready()
        log("warming up: 50 texts at 10/s")
        send_open_loop(url, warm, 10)
        wait_replies(db_path, len(warm), 30)
        if light:
            log(f"light load: {len(light)} texts at {args.light_rate:g}/s")
            send_open_loop(url, light, args.light_rate)
            wait_replies(db_path, len(warm) + len(light), 30)
        log(f"load: {count} signed webhooks at {args.rate:g}/s, open loop")
        pids = [server.popen.pid, *server.worker_pids()]
        spies = profile(pids[1:], work, args.seconds) if args.profile else []
        cpu_before = cpu_seconds(pids)
        took = send_open_loop(url, texts, args.rate)
        replies = wait_replies(db_path, len(warm) + len(light) + count, 60)
        cpu_used = cpu_seconds(pids) - cpu_before
        for spy in spies:
            spy.wait()
        time.sleep(0.5)  # the last status callbacks
    finally:
        server.stop()
    log(f"sent in {took:.1f} s; {replies} replies reached the sandbox")

    # Each text -> the app's reply row (reply_to_sid) -> the sandbox's record of the create call.
    # The two live in two files (the app's and the sandbox's): matched here by the reply's sid.
    reply_of = dict(
        _query(
            db_path,
            "SELECT sid, reply_to_sid FROM messages "
            "WHERE direction = 'outbound' AND reply_to_sid IS NOT NULL AND sid IS NOT NULL",
        )
    )
    creates = _query(
        sandbox_db(db_path),
        "SELECT sid, to_number, date_created FROM sandbox_messages "
        "WHERE direction = 'outbound-api'",
    )
    reached = {
        reply_of[sid]: (to, _epoch(created)) for sid, to, created in creates if sid in reply_of
    }
    per_number = Counter(to for _sid, to, _created in creates)
    locked = server.log_path.read_text(errors="replace").count("database is locked")
    main_phase = analyse(texts, reached, per_number)
    light_phase = analyse(light, reached, per_number) if light else None
    latency = main_phase["reply_latency_ms"]
    cpu_ms = round(1000 * cpu_used / count, 1)
    log(
        f"reply latency p50 {latency['p50']} ms, p90 {latency['p90']} ms, "
        f"p99 {latency['p99']} ms, max {latency['max']} ms"
    )
    if light_phase is not None:
        quiet = light_phase["reply_latency_ms"]
        log(f"at {args.light_rate:g}/s: p50 {quiet['p50']} ms, p99 {quiet['p99']} ms")
    log(f"server CPU: {cpu_ms} ms per text; load average before the run {load_average:.2f}")
    misses = sum(
        phase["unanswered"] + phase["answered_twice"] + phase["answered_to_wrong_number"]
        for phase in (main_phase, light_phase)
        if phase is not None
    )
    not_ok = sum(phase["webhooks_not_200"] for phase in (main_phase, light_phase) if phase)
    log(f"webhooks not 200: {not_ok}, not answered exactly once: {misses}, locked: {locked}")

    figures: list[Figure] = [
        at_most("reply latency p50", latency["p50"], "ms", P50_TARGET_MS),
        at_most("reply latency p99", latency["p99"], "ms", P99_TARGET_MS),
        Figure("inbound rate sent", round(count / took, 1), "/s"),
    ]
    if light_phase is not None:
        quiet = light_phase["reply_latency_ms"]
        figures += [
            Figure(f"reply latency p50 at {args.light_rate:g}/s", quiet["p50"], "ms"),
            Figure(f"reply latency p99 at {args.light_rate:g}/s", quiet["p99"], "ms"),
        ]
    figures += [
        Figure("server CPU per text", cpu_ms, "ms"),
        equal("webhooks not answered 200", not_ok, "", 0),
        equal("texts not answered exactly once", misses, "", 0),
    ]
    details = {
        "rate_per_second": args.rate,
        "seconds": args.seconds,
        **main_phase,
        "light_phase": {"rate_per_second": args.light_rate, **light_phase} if light_phase else None,
        "warm_up_texts": len(warm),
        "server_cpu_ms_per_text": cpu_ms,
        "load_average_before": round(load_average, 2),
        "database_is_locked_in_log": locked,
        "reply_mode": "chat engine echo (CHAT_MODE=echo), AUTO_REPLY_MAX_PER_HOUR=1000",
        "measured": "sandbox_messages.date_created of the reply (taken as the create call "
        "comes in) minus the moment the load received the webhook's answer; linked by "
        "messages.reply_to_sid",
        "server": "gunicorn.conf.py: gthread, 2 processes x 8 threads, a reply worker thread "
        "in each; the sandbox in the same server; SQLite",
    }
    if not args.no_write:
        write_result("reply-latency", "Reply latency (SQLite)", figures, details)
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
