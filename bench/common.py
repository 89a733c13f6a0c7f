"""What every benchmark shares: the machine, servers on 127.0.0.1, percentiles, result files.

Each benchmark writes `bench/results/<date>-<name>.json`; `update_tables()` rebuilds the table
in docs/benchmarks.md from the newest result of each name.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent  # gunicorn and twilio-chat live beside this python
SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a local benchmark
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a local benchmark
TABLE_START = "<!-- bench:table:start -->"
TABLE_END = "<!-- bench:table:end -->"


def log(message: str) -> None:
    """Print one progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reference_seconds() -> float:
    """Time a fixed piece of pure Python on one core (best of three): the machine's speed.

    Machines of the same name differ, and a shared one changes from hour to hour: results
    compare only beside this figure, which is smaller on a faster machine.
    """
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(6_000_000):
            total += i % 7
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def machine() -> dict[str, Any]:
    """Describe the machine a result was measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "reference_seconds": reference_seconds(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], pct: float) -> float:
    """Return the pct-th percentile (nearest rank) of values; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def app_env(
    port: int, db_path: Path, database_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of an app process: production settings, the built-in sandbox, 127.0.0.1."""
    from twilio_chat.settings import Settings

    ours = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("TWILIO_")}
    env.update(
        APP_ENV="production",
        SECRET_KEY=SECRET,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        APP_HOST="127.0.0.1",
        APP_PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        DB_PATH=str(db_path),
        SPOOL_DIR=str(db_path.parent / "spool"),
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def twilio_chat(env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
    """Run one `twilio-chat` command to completion and return what it printed."""
    done = subprocess.run(  # noqa: S603 - our own command
        [str(BIN / "twilio-chat"), *args],
        env=dict(env),
        cwd=Path(env["DB_PATH"]).parent,  # not the checkout: its .env must not apply
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"twilio-chat {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Server:
    """A process serving HTTP on 127.0.0.1, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path
    log_file: IO[bytes]
    children: list[int] = field(default_factory=list)

    def wait_ready(self, path: str = "/healthz", timeout: float = 30.0) -> None:
        """Wait until `path` answers 200, or fail with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        """Return the pids of the server's descendants (gunicorn's workers)."""
        found: list[int] = []
        parents = [self.popen.pid]
        while parents:
            parent = parents.pop(0)
            for task in sorted(Path(f"/proc/{parent}/task").glob("*"), key=lambda t: t.name):
                try:
                    children = [int(p) for p in (task / "children").read_text().split()]
                except OSError:
                    continue
                found += children
                parents += children
        return found

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of the server's log."""
        self.log_file.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM), or kill it after 20 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()


def start(
    name: str,
    argv: list[str],
    env: Mapping[str, str],
    url: str,
    logs: Path,
) -> Server:
    """Start a process in `logs` (so no .env of the checkout applies), output in `<name>.log`."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    log_file = log_path.open("wb")
    env = {**env, "PYTHONPATH": str(ROOT)}  # bench.bare, for the ceiling's server
    popen = subprocess.Popen(  # noqa: S603 - our own binaries
        argv, env=env, cwd=logs, stdout=log_file, stderr=subprocess.STDOUT
    )
    return Server(name, popen, url, log_path, log_file)


def gunicorn(
    name: str,
    env: Mapping[str, str],
    logs: Path,
    app: str = "twilio_chat.wsgi:app",
) -> Server:
    """Start gunicorn with the production config (gunicorn.conf.py) serving `app`."""
    argv = [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), app]
    return start(name, argv, env, f"http://127.0.0.1:{env['APP_PORT']}", logs)


def cpu_seconds(pids: list[int]) -> float:
    """Return the CPU time (user + system) the processes have used so far (gone ones: 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def profile(
    pids: list[int], folder: Path, seconds: float, gil: bool = True
) -> list[subprocess.Popen[bytes]]:
    """Record each process with py-spy (raw collapsed stacks in folder/profile-<pid>.txt).

    `gil`: only samples of the thread holding the interpreter lock. That records nothing of a
    gunicorn worker's threads here, so the ingest benchmark records every thread instead.
    """
    spies = []
    for pid in pids:
        out = folder / f"profile-{pid}.txt"
        log(f"profiling pid {pid} into {out}")
        argv = [str(BIN / "py-spy"), "record", *(["--gil"] if gil else []), "--format", "raw"]
        argv += ["-o", str(out)]
        argv += ["-d", str(int(seconds)), "-p", str(pid)]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))  # noqa: S603
    return spies


def inbound_webhook(sid: str, sender: str, body: str) -> dict[str, str]:
    """The form Twilio posts for an inbound text to the sandbox's number (the sandbox's own)."""
    from twilio_chat.sandbox.state import inbound_form
    from twilio_chat.settings import SANDBOX_ACCOUNT_SID, SANDBOX_DEFAULT_FROM

    return inbound_form(SANDBOX_ACCOUNT_SID, sid, sender, SANDBOX_DEFAULT_FROM, body, [])


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


# Results ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, its target and whether it is met."""

    label: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the figure as JSON-ready data."""
        return {
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
        }


def at_least(label: str, value: float, unit: str, target: float) -> Figure:
    """A figure that must be at least `target`."""
    return Figure(label, value, unit, f"≥ {target:g}", value >= target)


def at_most(label: str, value: float, unit: str, target: float) -> Figure:
    """A figure that must be at most `target`."""
    return Figure(label, value, unit, f"≤ {target:g}", value <= target)


def equal(label: str, value: float, unit: str, expected: float) -> Figure:
    """A figure that must equal `expected` exactly."""
    return Figure(label, value, unit, f"= {expected:g}", value == expected)


def write_result(
    name: str, title: str, figures: Iterable[Figure], details: Mapping[str, Any]
) -> Path:
    """Write `bench/results/<date>-<name>.json` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    data = {
        "name": name,
        "title": title,
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "figures": [f.as_dict() for f in figures],
        "details": dict(details),
    }
    path = RESULTS / f"{now:%Y-%m-%d}-{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {path.relative_to(ROOT)}")
    return path


ORDER = ["ingest", "reply-latency", "million-sqlite", "million-postgresql", "workers", "live"]


def latest_results() -> list[dict[str, Any]]:
    """Return the newest result of each benchmark, in the table's order."""
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        key = data["name"]
        if key not in newest or data["date"] >= newest[key][0]:
            newest[key] = (data["date"], data)
    names = sorted(newest, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [newest[n][1] for n in names]


def _format(value: float, unit: str) -> str:
    if isinstance(value, float) and not value.is_integer():
        number = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    else:
        number = f"{int(value):,}"
    return f"{number} {unit}".strip()


def render_table(results: list[dict[str, Any]]) -> str:
    """Render the results as one Markdown table."""
    lines = [
        "| Benchmark | Figure | Result | Target | Met | Date | Machine |",
        "|---|---|---:|---|:-:|---|---|",
    ]
    for data in results:
        box = data["machine"]
        where = f"{box['cores']} cores, {box['cpu']}"
        if "reference_seconds" in box:
            where += f", reference {box['reference_seconds']:.2f} s"
        for fig in data["figures"]:
            met = {True: "yes", False: "**no**", None: ""}[fig["met"]]
            lines.append(
                f"| {data['title']} | {fig['label']} | {_format(fig['value'], fig['unit'])} "
                f"| {fig['target']} | {met} | {data['date']} | {where} |"
            )
    return "\n".join(lines)


def replace_between(path: Path, body: str) -> None:
    """Replace the text between the table markers of a Markdown file."""
    text = path.read_text()
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    path.write_text(text[:start] + "\n" + body + "\n" + text[end:])


def update_tables() -> None:
    """Rebuild the results table in docs/benchmarks.md from the newest results."""
    path = ROOT / "docs" / "benchmarks.md"
    replace_between(path, render_table(latest_results()))
    log(f"updated the table in {path.relative_to(ROOT)}")
