# `make run` and `make test` bootstrap their own virtual environment from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit browser screenshots bench bench-fanout clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ledgerlink demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

browser:  # Debian's Chromium for the browser tests; skipped with a note where it cannot be installed
	scripts/install-browser

unit: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

screenshots: $(STAMP) browser  # re-take docs/screenshots/*.png from the browser tests
	LEDGERLINK_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/web

bench: $(STAMP)
	$(BIN)/python -m bench.bench_sync && $(BIN)/python -m bench.bench_report && $(BIN)/python -m bench.bench_patient_import && $(BIN)/python -m bench.bench_opendental && $(BIN)/python -m bench.bench_ingest && $(BIN)/python -m bench.bench_instant

bench-fanout: $(STAMP)  # 10,000 Open Dental offices, 1,000 at a time: about 8 minutes with its set-up
	$(BIN)/python -m bench.bench_fanout

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
