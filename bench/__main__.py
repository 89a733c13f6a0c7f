"""`make bench`: run every benchmark, write bench/results/<date>-<name>.json, update the tables.

python -m bench                 # all of them (PostgreSQL too when TEST_DATABASE_URL is set)
python -m bench ingest workers  # only these
python -m bench --table         # only rebuild the tables from the newest results
"""

from __future__ import annotations

import argparse
import importlib
import os

from .common import log, update_tables

# name -> (module, its arguments)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "ingest": ("bench.ingest", []),
    "reply-latency": ("bench.latency", []),
    "million-sqlite": ("bench.million", ["--database", "sqlite"]),
    "million-postgresql": ("bench.million", ["--database", "postgresql"]),
    "workers": ("bench.workers", []),
}


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
    for name in names:
        if name == "million-postgresql" and not os.environ.get("TEST_DATABASE_URL"):
            log("million-postgresql: skipped, TEST_DATABASE_URL is not set")
            continue
        module, extra = BENCHMARKS[name]
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
