"""Where ingest's CPU goes: each server process's CPU and context switches per webhook under load.

Serves a WSGI app under gunicorn with the production config (the app by default; `bench.bare:app`
for the ceiling; `'bench.standin:noop()'` or `'bench.standin:sleep(2)'` for the app with a
stand-in store), posts pre-signed webhooks with wrk as the ingest benchmark does, and prints,
per process, the CPU (user and system) and the voluntary and involuntary context switches of all
its threads per webhook, and how much of the machine stayed idle. Nothing is written to
bench/results: it is an instrument for comparing variants, run back to back, several times over.

    python -m bench.processes [--app 'bench.standin:noop()'] [--seconds 10] [--warm 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Server, _cmdline, app_env, free_port, gunicorn, twilio_chat
from bench.ingest import make_payloads, run_wrk


@dataclass(frozen=True)
class Sample:
    """What one process had used so far."""

    user: float  # seconds
    system: float  # seconds
    voluntary: int  # context switches, all threads
    involuntary: int
    name: str


def sample(pid: int) -> Sample | None:
    """Read a process's CPU time and its threads' context switches from /proc (None: gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        voluntary = involuntary = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "voluntary_ctxt_switches":
                    voluntary += int(value)
                elif key == "nonvoluntary_ctxt_switches":
                    involuntary += int(value)
    except OSError:
        return None
    user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
    name = _cmdline(pid).replace(b"\0", b" ").decode().strip()
    return Sample(user, system, voluntary, involuntary, name)


def idle_seconds() -> float:
    """Return the machine's idle time so far, summed over its CPUs, in seconds."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(cpu[4]) / os.sysconf("SC_CLK_TCK")


def measure(
    server: Server, url: str, work: Path, seconds: int, connections: int, offset: int
) -> int:
    """Run one load (from payload `offset` on), print each process's share per webhook; return
    how many payloads it sent."""
    pids = [server.popen.pid, *server.worker_pids()]
    before = {pid: sample(pid) for pid in pids}
    idle_before, started = idle_seconds(), time.monotonic()
    raw = run_wrk(url, work, seconds, connections, 1, offset)
    idle, elapsed = idle_seconds() - idle_before, time.monotonic() - started
    count = max(1, raw["requests"])
    print(
        f"{count / (raw['duration_us'] / 1e6):,.0f} webhooks/s, p99 {raw['p99_us'] / 1000:.1f} ms"
    )
    total = 0.0
    for pid in pids:
        old, new = before[pid], sample(pid)
        if old is None or new is None:
            continue
        user = 1000 * (new.user - old.user) / count
        system = 1000 * (new.system - old.system) / count
        total += user + system
        print(
            f"  {pid:>7} user {user:.3f} sys {system:.3f} ms"
            f"  switches {(new.voluntary - old.voluntary) / count:.2f}"
            f" + {(new.involuntary - old.involuntary) / count:.2f} forced"
            f"  {new.name[-60:]}"
        )
    share = 100 * idle / (elapsed * (os.cpu_count() or 1))
    print(f"  all: {total:.3f} ms of CPU per webhook; the machine {share:.0f} % idle")
    return int(max(raw["sent"]))


def main(argv: list[str] | None = None) -> int:
    """Serve the app (or a variant), load it with wrk, and print where its CPU went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="twilio_chat.wsgi:app", help="the WSGI app to serve")
    parser.add_argument("--seconds", type=int, default=10, help="how long each load runs")
    parser.add_argument("--warm", type=int, default=2, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=16, help="wrk's concurrency")
    parser.add_argument("--rounds", type=int, default=1, help="loads measured one after another")
    args = parser.parse_args(argv)
    for name in ("seconds", "warm", "connections", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed (apt-get install wrk; `make bench` does it)")
    work = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    port = free_port()
    env = app_env(port, work / "app.db", WORKER_ENABLED="false")
    twilio_chat(env, "prepare")
    from twilio_chat.settings import build_settings

    url = f"http://127.0.0.1:{port}"
    # Enough distinct texts for every load: a replayed sid would be a cheaper duplicate.
    count = 4000 * (args.warm + args.seconds * args.rounds)
    make_payloads(work, f"{url}/twilio/inbound", build_settings(env).auth_token, 1, count)
    server = gunicorn("app", env, work, app=args.app)
    try:
        server.wait_ready()
        time.sleep(2)  # every worker process has loaded its app
        offset = int(max(run_wrk(url, work, args.warm, args.connections, 1, 0)["sent"]))
        for _ in range(args.rounds):
            offset += measure(server, url, work, args.seconds, args.connections, offset)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
