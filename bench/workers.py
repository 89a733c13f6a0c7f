"""Benchmark 5, worker throughput: reply jobs finished per second by 1, 2 and 4 workers.

First gunicorn (production config, WORKER_ENABLED=false) stores a batch of signed inbound
webhooks on SQLite, each from its own number, so every one waits as a reply job; that database
is copied. Then, for each worker count, a fresh copy is served by gunicorn (the built-in sandbox
and its status callbacks, still no worker thread) while that many `twilio-chat worker`
processes empty the queue. The chat engine `echo` answers, so no network is needed. Jobs per
second is measured from the jobs' own `finished_at` times (first to last), and every run must
finish every job and answer every text exactly once, with no "database is locked" in any log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    BIN,
    Figure,
    Server,
    app_env,
    cpu_seconds,
    equal,
    free_port,
    gunicorn,
    log,
    start,
    twilio_chat,
    write_result,
)
from bench.latency import _epoch, _query, make_texts, sandbox_db

WORKER_COUNTS = (1, 2, 4)


def ingest(env: dict[str, str], work: Path, count: int) -> None:
    """Store `count` signed inbound webhooks (each leaves a reply job) with no worker running."""
    from twilio_chat.settings import build_settings

    port = env["APP_PORT"]
    url = f"http://127.0.0.1:{port}/twilio/inbound"
    texts = make_texts(url, build_settings(env).auth_token, count, 4)
    server = gunicorn("ingest", env, work)
    try:
        server.wait_ready()
        local = threading.local()

        def post(index: int) -> int:
            if not hasattr(local, "http"):
                local.http = requests.Session()
            text = texts[index]
            headers = {"X-Twilio-Signature": text.signature}
            return int(
                local.http.post(url, data=text.form, headers=headers, timeout=30).status_code
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(post, range(count)))
    finally:
        server.stop()
    bad = sum(1 for s in statuses if s != 200)
    if bad:
        raise RuntimeError(f"{bad} of {count} webhooks were not answered 200")


def snapshot(source: Path, target: Path) -> None:
    """Copy a SQLite database (its WAL folded in) into a single file."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")


def run_workers(
    env: dict[str, str], work: Path, db_path: Path, workers: int, jobs: int, timeout: float
) -> dict[str, Any]:
    """Serve the database, let `workers` processes empty its queue; return the measurements."""
    server = gunicorn("web", env, work)
    procs: list[Server] = []
    try:
        server.wait_ready()
        pids = [server.popen.pid, *server.worker_pids()]
        cpu_before = cpu_seconds(pids)
        started = time.monotonic()
        for i in range(workers):
            argv = [str(BIN / "twilio-chat"), "worker"]
            procs.append(start(f"worker-{i + 1}", argv, env, server.url, work))
        waiting = jobs
        while time.monotonic() - started < timeout:
            waiting = _query(
                db_path, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            )[0][0]
            if waiting == 0:
                break
            time.sleep(0.2)
        wall = time.monotonic() - started
        time.sleep(0.5)  # the last status callbacks
        cpu_used = cpu_seconds(pids + [p.popen.pid for p in procs]) - cpu_before
    finally:
        for proc in procs:
            proc.stop()
        server.stop()

    statuses = dict(_query(db_path, "SELECT status, count(*) FROM jobs GROUP BY status"))
    times = sorted(
        _epoch(t)
        for (t,) in _query(
            db_path, "SELECT finished_at FROM jobs WHERE status = 'done' AND kind = 'reply'"
        )
    )
    sends = _query(
        sandbox_db(db_path),
        "SELECT count(*), count(DISTINCT to_number) FROM sandbox_messages "
        "WHERE direction = 'outbound-api'",
    )[0]
    replies = _query(
        db_path,
        "SELECT count(*), count(DISTINCT reply_to_sid) FROM messages "
        "WHERE direction = 'outbound' AND reply_to_sid IS NOT NULL",
    )[0]
    inbound = _query(db_path, "SELECT count(*) FROM messages WHERE direction = 'inbound'")[0][0]
    locked = sum(
        p.log_path.read_text(errors="replace").count("database is locked") for p in [*procs, server]
    )
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    per_second = round((len(times) - 1) / span, 1) if span > 0 else 0.0
    return {
        "workers": workers,
        "jobs_per_second": per_second,
        "wall_seconds_to_empty_queue": round(wall, 1),
        "queue_left": waiting,
        "jobs_by_status": statuses,
        "inbound_texts": inbound,
        "sandbox_creates": sends[0],
        "sandbox_distinct_recipients": sends[1],
        "reply_rows": replies[0],
        "distinct_reply_to_sid": replies[1],
        "database_is_locked_in_logs": locked,
        "cpu_ms_per_job": round(1000 * cpu_used / max(len(times), 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the worker-throughput benchmark and write its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=800, help="reply jobs in the queue")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=list(WORKER_COUNTS), help="worker counts"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds per run at most")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-write", action="store_true", help="print, do not write a result")
    args = parser.parse_args(argv)

    load_average = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    port = free_port()
    base = work / "base" / "app.db"
    base.parent.mkdir()
    settings_env = {"CHAT_MODE": "echo", "AUTO_REPLY_MAX_PER_HOUR": "1000"}
    env = app_env(port, base, WORKER_ENABLED="false", **settings_env)
    twilio_chat(env, "prepare")
    log(f"storing {args.jobs} texts with no worker running")
    ingest(env, base.parent, args.jobs)
    queued = _query(base, "SELECT count(*) FROM jobs WHERE status = 'queued'")[0][0]
    if queued != args.jobs:
        raise RuntimeError(f"expected {args.jobs} queued reply jobs, found {queued}")
    golden = work / "snapshot.db"
    snapshot(base, golden)

    runs = []
    for count in args.workers:
        folder = work / f"run-{count}"
        folder.mkdir()
        db_path = folder / "app.db"
        snapshot(golden, db_path)
        run_env = app_env(port, db_path, WORKER_ENABLED="false", **settings_env)
        log(f"{count} worker(s): emptying a queue of {args.jobs} reply jobs")
        result = run_workers(run_env, folder, db_path, count, args.jobs, args.timeout)
        log(
            f"{count} worker(s): {result['jobs_per_second']} jobs/s, "
            f"queue empty after {result['wall_seconds_to_empty_queue']} s, "
            f"{result['cpu_ms_per_job']} ms CPU per job, "
            f"{result['database_is_locked_in_logs']} 'database is locked'"
        )
        runs.append(result)

    figures: list[Figure] = []
    for result in runs:
        label = f"{result['workers']} worker{'s' if result['workers'] > 1 else ''}"
        figures.append(Figure(f"jobs finished, {label}", result["jobs_per_second"], "/s"))
    by_count = {r["workers"]: r["jobs_per_second"] for r in runs}
    if by_count.get(1) and 2 in by_count:
        figures.append(Figure("2 workers / 1 worker", round(by_count[2] / by_count[1], 2), "x"))
    not_done = sum(args.jobs - r["jobs_by_status"].get("done", 0) for r in runs)
    not_once = sum(
        abs(r["sandbox_creates"] - args.jobs)
        + abs(r["sandbox_distinct_recipients"] - args.jobs)
        + abs(r["distinct_reply_to_sid"] - args.jobs)
        + (r["reply_rows"] - r["distinct_reply_to_sid"])
        for r in runs
    )
    locked = sum(r["database_is_locked_in_logs"] for r in runs)
    figures += [
        equal("jobs not done", not_done, "", 0),
        equal("texts not answered exactly once", not_once, "", 0),
        equal('"database is locked" in the logs', locked, "", 0),
    ]
    details = {
        "jobs": args.jobs,
        "load_average_before": round(load_average, 2),
        "runs": runs,
        "reply_mode": "chat engine echo (CHAT_MODE=echo), AUTO_REPLY_MAX_PER_HOUR=1000",
        "measured": "(done reply jobs - 1) / (last finished_at - first finished_at)",
        "server": "gunicorn.conf.py: gthread, 2 processes x 8 threads, WORKER_ENABLED=false, "
        "serving the sandbox and its status callbacks; `twilio-chat worker` processes; SQLite",
    }
    for result in runs:
        log(f"{result['workers']} worker(s): jobs {result['jobs_by_status']}")
    if not args.no_write:
        write_result("workers", "Worker throughput (SQLite)", figures, details)
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
