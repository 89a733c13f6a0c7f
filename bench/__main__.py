"""`make bench`: run every benchmark, write bench/results/<date>-<name>.json, update the tables.

python -m bench                 # all of them (PostgreSQL too when TEST_DATABASE_URL is set)
python -m bench ingest workers  # only these
python -m bench --table         # only rebuild the tables from the newest results
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

from bench.common import log, update_tables

SETTLE_LOAD = 1.0  # the one-minute load average a benchmark waits for (on two cores: half busy)
SETTLE_SECONDS = 90  # but no longer than this

# name -> (module, its arguments)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "ingest": ("bench.ingest", []),
    "ingest-postgresql": ("bench.ingest", ["--database", "postgresql"]),
    "reply-latency": ("bench.latency", []),
    "million-sqlite": ("bench.million", ["--database", "sqlite"]),
    "million-postgresql": ("bench.million", ["--database", "postgresql"]),
    "workers": ("bench.workers", []),
    "live": ("bench.live", []),
}


def settle() -> None:
    """Let the machine quiet down after the benchmark before: flush its writes, wait for load.

    Right after the ingest benchmark the kernel still writes back its database and the load
    average stands near 10; a benchmark started then measures the one before it too.
    """
    os.sync()
    start = time.monotonic()
    while os.getloadavg()[0] > SETTLE_LOAD and time.monotonic() - start < SETTLE_SECONDS:
        time.sleep(2)
    log(f"settled for {time.monotonic() - start:.0f} s (load average {os.getloadavg()[0]:.2f})")


def main() -> int:
    """Run the chosen benchmarks (all by default), then rebuild the results tables."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"which to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("--table", action="store_true", help="only rebuild the tables")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = [] if args.table else (args.names or list(BENCHMARKS))
    failed = []
    for position, name in enumerate(names):
        if name.endswith("-postgresql") and not os.environ.get("TEST_DATABASE_URL"):
            log(f"{name}: skipped, TEST_DATABASE_URL is not set")
            continue
        module, extra = BENCHMARKS[name]
        if position:
            settle()
        log(f"== {name} ==")
        if importlib.import_module(module).main(extra) != 0:
            failed.append(name)
    update_tables()
    if failed:
        log(f"failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
