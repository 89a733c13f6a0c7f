# The README's commands. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format typecheck clean translations bench

# `make run` installs what the app needs to run; `make test` and `make bench` add their tools.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(TEST_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

run: $(RUN_STAMP)
	$(BIN)/twilio-chat run

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work here).
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	  || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# The whole suite on SQLite; then again on PostgreSQL when TEST_DATABASE_URL is set. The quick
# tests run in two processes; the slow ones (real processes, a browser-free load) one at a time.
PYTEST_QUICK := $(BIN)/pytest -m "not slow" -n 2 --dist loadfile
PYTEST_SLOW := $(BIN)/pytest -m slow -p no:xdist

test: $(TEST_STAMP) $(CHROMIUM)
	$(BIN)/lint-imports
	env -u TEST_DATABASE_URL $(PYTEST_QUICK)
	env -u TEST_DATABASE_URL $(PYTEST_SLOW)
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
	  echo "== the same suite on PostgreSQL ($$TEST_DATABASE_URL) =="; \
	  $(PYTEST_QUICK) && $(PYTEST_SLOW); \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmarks (docs/benchmarks.md): wrk from Debian drives the ingest benchmark. BENCH=name runs one.
WRK := /usr/bin/wrk
$(WRK):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk \
	  || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk)

bench: $(BENCH_STAMP) $(WRK)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench $(BENCH)

# Extract the panel's texts and rebuild the Polish catalog from tools/pl.py.
translations: $(TEST_STAMP)
	$(BIN)/python tools/translations.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
