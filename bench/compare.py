"""Compare two checkouts' ingest: both served side by side, wrk loads alternating between them.

    python -m bench.compare <checkout A> <checkout B> [--rounds 8] [--seconds 5]

Each checkout's app runs as the ingest benchmark serves it (gunicorn with that checkout's
`gunicorn.conf.py`, its own `src/` first on the path, SQLite, `APP_ENV=production`,
`WORKER_ENABLED=false`), with a database of its own; both run for the whole comparison. The
loads alternate, A first in even rounds and B first in odd ones, 16 connections each. Every
round prints both servers' webhooks/s, p99, server CPU per webhook and failed requests, and B's
webhooks/s over A's. This machine's speed drifts from one minute to the next, so only loads run
back to back compare: the answer is the median of the rounds' ratios. Run it with one checkout
as both A and B first, to see the spread on the machine of the day. Writes no result.

A checkout is a directory such as `git worktree add /tmp/before HEAD~1` makes; it needs no
virtualenv of its own (this one's packages serve both).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, Server, app_env, free_port, gunicorn, log
from bench.ingest import make_payloads, measured

CONNECTIONS = 16
PER_SECOND = 3500  # payloads signed per second of load: more than the app serves here


def checkout(value: str) -> Path:
    """Return a checkout's directory, or fail if it holds no app to serve."""
    path = Path(value).resolve()
    if not (path / "gunicorn.conf.py").is_file() or not (path / "src/twilio_chat").is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no gunicorn.conf.py and src/twilio_chat here")
    return path


def serve(name: str, tree: Path, work: Path, payloads: int) -> tuple[Server, Path]:
    """Prepare a database, sign payloads and start gunicorn for one checkout."""
    port = free_port()
    env = app_env(port, work / f"{name}.db", WORKER_ENABLED="false")
    own = {**env, "PYTHONPATH": str(tree / "src")}
    probe = [str(BIN / "python"), "-c", "import twilio_chat; print(twilio_chat.__file__)"]
    found = subprocess.run(probe, env=own, capture_output=True, text=True, check=True)  # noqa: S603
    if not found.stdout.strip().startswith(str(tree / "src")):
        raise SystemExit(f"error: {name} would import twilio_chat from {found.stdout.strip()}")
    prepare = [str(BIN / "twilio-chat"), "prepare"]
    subprocess.run(prepare, env=own, cwd=work, capture_output=True, check=True)  # noqa: S603
    from twilio_chat.settings import build_settings

    folder = work / name
    folder.mkdir()
    url = f"http://127.0.0.1:{port}/twilio/inbound"
    make_payloads(folder, url, build_settings(env).auth_token, 1, payloads)
    return gunicorn(name, env, work / f"logs-{name}", checkout=tree), folder


def load(server: Server, folder: Path, seconds: int, offset: int) -> dict[str, Any]:
    """Run one wrk load from payload `offset` on; return its figures and how many it sent."""
    options = argparse.Namespace(seconds=seconds, connections=CONNECTIONS, threads=1)
    raw, cpu = measured(server, server.url, folder, options, offset)
    count = max(1, raw["requests"])
    return {
        "rate": count / (raw["duration_us"] / 1e6),
        "p99_ms": raw["p99_us"] / 1000,
        "cpu_ms": 1000 * cpu / count,
        "failed": raw["status"] + raw["timeout"] + raw["connect"] + raw["read"] + raw["write"],
        "sent": int(max(raw["sent"])),
    }


def describe(figures: dict[str, Any]) -> str:
    """One server's figures of a round, for the printed line."""
    return (
        f"{figures['rate']:,.0f}/s p99 {figures['p99_ms']:.1f} ms"
        f" cpu {figures['cpu_ms']:.3f} ms failed {figures['failed']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Serve both checkouts, alternate the loads, print each round and the median ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=checkout, help="the checkout to compare against")
    parser.add_argument("b", type=checkout, help="the checkout measured against A")
    parser.add_argument("--rounds", type=int, default=8, help="pairs of loads")
    parser.add_argument("--seconds", type=int, default=5, help="how long each load runs")
    args = parser.parse_args(argv)
    for name in ("rounds", "seconds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed (apt-get install wrk; `make bench` does it)")
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    payloads = PER_SECOND * args.seconds * (args.rounds + 1)
    servers: list[tuple[Server, Path]] = []
    try:
        log("signing payloads and starting both servers")
        for name, tree in (("A", args.a), ("B", args.b)):
            servers.append(serve(name, tree, work, payloads))
        for server, _ in servers:
            server.wait_ready()
        time.sleep(2)  # every worker process has loaded its app
        offsets = {server.name: load(server, folder, 2, 0)["sent"] for server, folder in servers}
        ratios = []
        for round_ in range(args.rounds):
            got: dict[str, dict[str, Any]] = {}
            for server, folder in servers if round_ % 2 == 0 else servers[::-1]:
                got[server.name] = load(server, folder, args.seconds, offsets[server.name])
                offsets[server.name] += got[server.name]["sent"]
            ratios.append(got["B"]["rate"] / got["A"]["rate"])
            print(
                f"round {round_ + 1}: A {describe(got['A'])} | B {describe(got['B'])}"
                f" | B/A {ratios[-1]:.3f}",
                flush=True,
            )
        print(
            f"B/A: median {statistics.median(ratios):.3f},"
            f" rounds {min(ratios):.3f}-{max(ratios):.3f}"
        )
    except Exception:
        for server, _ in servers:
            print(f"{server.name}'s log:\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        for server, _ in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
