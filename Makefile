# Every target does its own set-up: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the server needs (runtime dependencies only); $(STAMP) adds the dev extras.
RUNTIME := $(VENV)/.installed-runtime

.PHONY: serve test test-fast lint chromium bench-console fmt bench-otlp bench-load bench-validate bench-query bench-export bench-gateway bench-workers bench bench-scaling bench-maintenance test-azure bench-smoke soak fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUNTIME)

serve: $(RUNTIME)
	$(BIN)/istore serve --load-sample-if-empty

# Everything (CI runs this).
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The edit-run loop: unit and in-process API tests, without live servers, emulators,
# crash loops, soak, fuzzing and property runs (the `slow` marker).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n auto

# The console's browser tests drive Debian's chromium (Playwright cannot download its own).
chromium:
	@command -v chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || (sudo apt-get update -q >/dev/null && sudo apt-get install -y -q chromium >/dev/null)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Load on loopback with wrk (installed from Debian if missing); LIST_ROWS=0 skips the
# 1M-row list-latency part.
LIST_ROWS ?= 1000000
bench-load: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null 2>&1 || sudo apt-get install -y -q wrk)
	$(BIN)/python bench/load.py --list-rows $(LIST_ROWS) --json bench/results/load-$$(date +%F).json

# Ingest validation cost per row: fast path vs pydantic vs gateway-log records.
bench-validate: $(STAMP)
	$(BIN)/python bench/validate.py

# Query latency (lookups, stats) over a generated store via HTTP; ROWS=1000000 for a quick run.
ROWS ?= 10000000
bench-query: $(STAMP)
	$(BIN)/python bench/query.py --rows $(ROWS) --json bench/results/query-$$(date +%F).json

# Us against the limit, PostgreSQL 15 and chDB on the same rows (SCALE=1M | 10M | smoke).
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null 2>&1 || sudo apt-get install -y -q wrk)
	@test -x /usr/lib/postgresql/15/bin/initdb || (apt-get install -y -q postgresql-15 >/dev/null 2>&1 || sudo apt-get install -y -q postgresql-15)
	$(BIN)/python bench/compare.py --scale $${SCALE:-1M}

# One process, --workers 2, and S3 (moto on loopback) with one and three nodes.
# Ingest p99 and 503s while purge + compaction run on a ROWS store (default 1M), vs none.
bench-maintenance: $(STAMP)
	$(BIN)/python bench/maintenance.py --rows $(if $(filter command line environment,$(origin ROWS)),$(ROWS),1000000) --json bench/results/maintenance-$$(date +%F).json

bench-scaling: $(STAMP)
	$(BIN)/python bench/scaling.py --json bench/results/scaling-$$(date +%F).json

# The object-store tests against Azurite too (needs node and npm; CI has neither).
test-azure: $(STAMP)
	@test -x .azurite/node_modules/.bin/azurite-blob || (mkdir -p .azurite && cd .azurite && npm install --silent azurite@3)
	$(BIN)/python -m pytest -q tests/test_scaling.py tests/test_state.py -k az

bench-smoke: $(STAMP)
	$(BIN)/python bench/compare.py --scale smoke --runs 2 --out /tmp/istore-bench-smoke

# Schemathesis over every operation, thousands of calls (CI runs ~500).
fuzz: $(STAMP)
	ISTORE_FUZZ_EXAMPLES=$${EXAMPLES:-200} $(BIN)/python -m pytest -q -s tests/test_fuzz.py -p no:cacheprovider

# What `serve --workers 2` buys (single-interaction ingest) and costs (memory per worker).
bench-workers: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y -q wrk >/dev/null 2>&1 || sudo apt-get install -y -q wrk)
	$(BIN)/python bench/workers.py --json bench/results/workers-$$(date +%F).json

# Latency the gateway adds over calling an instant upstream directly (wrk, 1 and 32 conns),
# side by side with LiteLLM's proxy (its own venv: heavy, kept out of .[dev]).
LITELLM_VENV := .bench-litellm
$(LITELLM_VENV)/bin/litellm:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet 'litellm[proxy]==1.105.7' 'prisma==0.15.0'

bench-gateway: $(STAMP) $(LITELLM_VENV)/bin/litellm
	@command -v wrk >/dev/null || (apt-get install -y wrk >/dev/null 2>&1 || sudo apt-get install -y wrk)
	@test -x /usr/lib/postgresql/15/bin/initdb || (apt-get install -y -q postgresql-15 >/dev/null 2>&1 || sudo apt-get install -y -q postgresql-15)
	$(BIN)/python bench/gateway.py --litellm $(LITELLM_VENV)/bin/litellm \
		--json bench/results/gateway-$$(date +%F).json

# Export speed vs DuckDB COPY ... TO json on the same rows (a store from bench-query).
bench-export: $(STAMP)
	$(BIN)/python bench/query.py --rows $(ROWS) --data .bench-data --runs 1
	$(BIN)/python bench/export.py --data .bench-data --json bench/results/export-$$(date +%F).json

# OTLP ingest against Arize Phoenix (its own venv: heavy, kept out of .[dev]); SPANS=100000.
PHOENIX_VENV := .bench-phoenix
$(PHOENIX_VENV)/bin/phoenix:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet 'arize-phoenix==20.26.1'

bench-otlp: $(STAMP) $(PHOENIX_VENV)/bin/phoenix
	$(BIN)/python bench/otlp.py --spans $${SPANS:-100000} --phoenix $(PHOENIX_VENV)/bin/phoenix \
		--json bench/results/otlp-$$(date +%F).json
# Server time per console page over a generated store of CONSOLE_ROWS interactions.
CONSOLE_ROWS ?= 1000000
bench-console: $(STAMP)
	$(BIN)/python bench/console.py --rows $(CONSOLE_ROWS) --json bench/results/console-$$(date +%F).json

# The crash test, many rounds (CI runs 3).
soak: $(STAMP)
	ISTORE_CRASH_ROUNDS=$${ROUNDS:-50} $(BIN)/python -m pytest -q -s tests/test_crash.py -p no:cacheprovider
	$(BIN)/python bench/soak.py --minutes $${MINUTES:-10} --preload $${PRELOAD:-300000} --json bench/results/soak-$$(date +%F).json

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) $(LITELLM_VENV) data .pytest_cache .ruff_cache .mypy_cache
