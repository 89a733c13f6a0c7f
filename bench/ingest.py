"""Benchmark 1, ingest: signed inbound webhooks per second against the framework's ceiling.

gunicorn with the production config (gunicorn.conf.py) serves the app on 127.0.0.1 with SQLite;
wrk, in its own process, posts pre-signed webhooks for a fixed time at a fixed concurrency, and
one request in ten replays an earlier sid (as Twilio does when it retries). Afterwards every
distinct sid must be stored once and have one reply job. The same gunicorn config then serves a
bare Flask app that only parses the form (bench/bare.py): the ceiling on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from bench.common import (
    BENCH,
    Figure,
    Server,
    app_env,
    at_least,
    at_most,
    cpu_seconds,
    equal,
    free_port,
    gunicorn,
    inbound_webhook,
    log,
    profile,
    reference_seconds,
    twilio_chat,
    write_result,
)
from bench.million import drop_pg_database, fresh_pg_database

LUA = BENCH / "wrk" / "inbound.lua"
REPLAY_SHARE = 0.10


def make_payloads(
    folder: Path, url: str, token: str, threads: int, per_thread: int
) -> list[list[str]]:
    """Write payloads-<n>.txt for each wrk thread; return each thread's sids in order."""
    validator = RequestValidator(token)
    rng = random.Random(20261125)
    every: list[list[str]] = []
    for thread in range(threads):
        sids: list[str] = []
        lines: list[str] = []
        signed: list[str] = []
        for i in range(per_thread):
            if i >= 10 and rng.random() < REPLAY_SHARE:
                replay = rng.randrange(len(signed))
                lines.append(signed[replay])
                sids.append(sids[replay])
                continue
            sid = f"SM{thread:04x}{i:028x}"
            sender = f"+1555{rng.randrange(1_000_000, 2_000_000):07d}"
            form = inbound_webhook(sid, sender, f"Hello, is the shop open today? ({i})")
            line = f"{validator.compute_signature(url, form)}\t{urlencode(form)}"
            lines.append(line)
            signed.append(line)
            sids.append(sid)
        (folder / f"payloads-{thread}.txt").write_text("\n".join(lines) + "\n")
        every.append(sids)
    return every


def run_wrk(
    url: str, folder: Path, seconds: int, connections: int, threads: int, offset: int
) -> dict[str, Any]:
    """Run wrk against url with the payloads in folder; return its JSON summary."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(folder),
        "/twilio/inbound",
        str(offset),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)  # noqa: S603
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    return result


def measured(
    server: Server, url: str, folder: Path, args: argparse.Namespace, offset: int
) -> tuple[dict[str, Any], float]:
    """Run wrk against a server; return wrk's summary and the server's CPU seconds meanwhile."""
    pids = server.worker_pids()
    before = cpu_seconds(pids)
    raw = run_wrk(url, folder, args.seconds, args.connections, args.threads, offset)
    return raw, cpu_seconds(pids) - before


def resend_tail(url: str, folder: Path, sent: list[int], offset: int, connections: int) -> int:
    """Post again the last requests of each wrk thread, as Twilio retries; return how many.

    When wrk stops, it closes connections whose requests may not have been read yet, and the
    kernel then drops them: those sids were "sent" but never reached the app. Sending each
    thread's last `connections` requests again (answered 200, duplicates or not) means every
    sid counted as sent did reach the app once, so the rows must match them exactly.
    """
    count = 0
    with requests.Session() as session:
        for thread, n in enumerate(sent):
            lines = (folder / f"payloads-{thread}.txt").read_text().splitlines()
            for line in lines[offset + max(0, n - connections) : offset + n]:
                signature, body = line.split("\t", 1)
                answer = session.post(
                    f"{url}/twilio/inbound",
                    data=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": signature,
                    },
                    timeout=30,
                )
                if answer.status_code != 200:
                    raise RuntimeError(f"a resent webhook was answered {answer.status_code}")
                count += 1
    return count


def describe(run: dict[str, Any]) -> str:
    """One log line's worth of a run."""
    return (
        f"{run['per_second']:,.0f}/s, p99 {run['p99_ms']} ms, errors {run['errors']}, "
        f"{run['cpu_ms_per_request']} ms of CPU per request, "
        f"reference {run['reference_seconds']:.2f} s before it"
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the median throughput (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["per_second"])
    return ordered[(len(ordered) - 1) // 2]


def paired_ratios(apps: list[dict[str, Any]], ceilings: list[dict[str, Any]]) -> list[float]:
    """Return each round's app throughput over the ceiling measured just before it.

    The machine's speed drifts within minutes, so a ratio compares two loads run back to back
    (with `--skip-ceiling`, the one ceiling measured stands for every round).
    """
    return [
        round(app["per_second"] / ceilings[min(i, len(ceilings) - 1)]["per_second"], 3)
        for i, app in enumerate(apps)
    ]


def median(values: list[float]) -> float:
    """Return the median (the lower middle value of an even count)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def summarize(raw: dict[str, Any], cpu_seconds_used: float) -> dict[str, Any]:
    """Turn wrk's counters into requests per second, milliseconds and an error count."""
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "per_second": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        "cpu_ms_per_request": round(1000 * cpu_seconds_used / max(1, raw["requests"]), 3),
        "requests_sent": sum(raw["sent"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the ingest benchmark and write its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=20, help="how long each load runs")
    parser.add_argument("--connections", type=int, default=16, help="wrk's concurrency")
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--profile", action="store_true", help="record the app's first worker with py-spy"
    )
    parser.add_argument("--skip-ceiling", action="store_true", help="the ceiling once, briefly")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating runs; medians count (at least 1)"
    )
    parser.add_argument(
        "--payloads",
        type=int,
        default=300_000,
        help="pre-signed webhooks (enough for the ceiling's rounds; fewer sign faster)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed (apt-get install wrk; `make bench` does it)")

    postgres = args.database == "postgresql"
    admin_url = os.environ.get("TEST_DATABASE_URL", "")
    if postgres and not admin_url:
        raise SystemExit("error: the PostgreSQL run needs TEST_DATABASE_URL")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    port = free_port()
    db_path = work / "app.db"
    pg_name = f"bench_ingest_{os.getpid()}"
    database_url = fresh_pg_database(admin_url, pg_name) if postgres else None
    env = app_env(port, db_path, database_url, WORKER_ENABLED="false")
    twilio_chat(env, "prepare")
    from twilio_chat.settings import build_settings

    token = build_settings(env).auth_token
    url = f"http://127.0.0.1:{port}"
    per_thread = args.payloads // args.threads
    log(f"signing {per_thread * args.threads:,} webhooks")
    sids = make_payloads(work, f"{url}/twilio/inbound", token, args.threads, per_thread)

    # The app listens on the port the payloads were signed for; the ceiling on another. Both
    # run side by side and the loads alternate, `--rounds` times: how gunicorn's two processes
    # happen to share wrk's connections moves a single run's figure a lot on two cores.
    log("starting the app and, for the ceiling, a bare Flask endpoint under the same config")
    bare_port = free_port()
    bare = gunicorn("bare", {**env, "APP_PORT": str(bare_port)}, work, app="bench.bare:app")
    server = gunicorn("app", env, work)
    bare_url = f"http://127.0.0.1:{bare_port}"
    ceilings: list[dict[str, Any]] = []
    apps: list[dict[str, Any]] = []
    sent_by_thread: list[set[str]] = [set() for _ in range(args.threads)]
    try:
        bare.wait_ready()
        server.wait_ready()
        time.sleep(2)  # every worker process has loaded its app
        run_wrk(bare_url, work, 3, args.connections, args.threads, 0)  # warm up
        offset = 0
        for round_ in range(1, args.rounds + 1):
            if not args.skip_ceiling or round_ == 1:
                speed = reference_seconds()  # the machine's speed, just before this load
                ceiling_raw, cpu = measured(bare, bare_url, work, args, 0)
                ceilings.append({**summarize(ceiling_raw, cpu), "reference_seconds": speed})
                log(f"round {round_}, ceiling: {describe(ceilings[-1])}")
            speed = reference_seconds()
            spy = None
            if args.profile and round_ == 1:
                spy = profile(server.worker_pids()[:1], work, args.seconds - 2, gil=False)[0]
            raw, cpu = measured(server, url, work, args, offset)
            if spy is not None:
                spy.wait()
            apps.append({**summarize(raw, cpu), "reference_seconds": speed})
            pair = apps[-1]["per_second"] / ceilings[-1]["per_second"]
            log(f"round {round_}, app: {describe(apps[-1])}; {pair:.2f} of the ceiling")
            resent = resend_tail(url, work, raw["sent"], offset, args.connections)
            apps[-1]["tail_resent"] = resent
            for thread, count in enumerate(raw["sent"]):
                sent_by_thread[thread].update(sids[thread][offset : offset + count])
            offset += max(raw["sent"])
        time.sleep(1)  # let the last requests in flight finish
    finally:
        server.stop()
        bare.stop()
    ceiling, app = median_run(ceilings), median_run(apps)
    sent = set().union(*sent_by_thread)
    rows, job_rows = _stored(database_url or f"sqlite:///{db_path}")
    if postgres:
        drop_pg_database(admin_url, pg_name)
    requests_sent = sum(a["requests_sent"] for a in apps)
    ratios = paired_ratios(apps, ceilings)
    ratio = median(ratios)
    figures: list[Figure] = [
        Figure("signed inbound webhooks", app["per_second"], "/s"),
        Figure("latency p50", app["p50_ms"], "ms"),
        at_most("latency p99", app["p99_ms"], "ms", 100),
        equal("errors", app["errors"], "", 0),
        Figure("bare Flask ceiling", ceiling["per_second"], "/s"),
        at_least("ratio to the ceiling", ratio, "", 0.20),
        equal("stored rows minus distinct sids sent", rows[0] - len(sent), "", 0),
        equal("reply jobs minus distinct sids sent", job_rows - len(sent), "", 0),
    ]
    details = {
        "seconds": args.seconds,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "replay_share": REPLAY_SHARE,
        "requests_sent": requests_sent,
        "distinct_sids_sent": len(sent),
        "message_rows": rows[0],
        "distinct_sids_stored": rows[1],
        "reply_jobs": job_rows,
        "database": args.database,
        "durability": "each webhook's transaction is committed durably before its answer",
        "rounds": args.rounds,
        "app": app,
        "ceiling": ceiling,
        "ratio": "median over the rounds of the app's throughput / the ceiling's just before",
        "round_ratios": ratios,
        "app_rounds": apps,
        "ceiling_rounds": ceilings,
        "server": "gunicorn.conf.py: gthread, 2 processes x 8 threads; WORKER_ENABLED=false",
    }
    name, label = ("ingest-postgresql", "PostgreSQL") if postgres else ("ingest", "SQLite")
    write_result(name, f"Ingest ({label})", figures, details)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")
    return 0


def _stored(url: str) -> tuple[tuple[int, int], int]:
    """Count the stored messages (all, distinct sids) and the reply jobs."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT count(*), count(DISTINCT sid) FROM messages")).one()
            jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE kind='reply'")).scalar_one()
    finally:
        engine.dispose()
    return (int(found[0]), int(found[1])), int(jobs)


if __name__ == "__main__":
    raise SystemExit(main())
