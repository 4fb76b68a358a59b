# Quick start: `make demo` then `make test`. Everything runs from the project's own virtualenv (.venv).
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := $(CURDIR)/.demo

.PHONY: venv lock demo test test-fast lint bench clean install
ROLE ?= device

venv:
	@./scripts/bootstrap.sh $(VENV)

demo: venv
	@./scripts/demo.sh

# Independent tests run on JOBS workers (most of the suite waits on brokers, processes and real time, so
# more workers than cores pays); a test file stays on one worker (--dist loadfile: its module fixtures run once).
JOBS ?= 4
test: venv
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

# The suite without the long real-time and fault loops (pytest -m slow lists them; docs/testing.md).
test-fast: venv
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile -m "not slow"

# Refresh requirements.lock and requirements-pi.lock from pyproject.toml on purpose (docs/dependencies.md):
# `make lock`, `make lock UPGRADE=1` (everything to the newest allowed), `make lock UPGRADE_PACKAGE=av`.
lock: venv
	@./scripts/lock.sh

lint: venv
	$(BIN)/ruff check agent sync firmware_config tests benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/bench_ledger.py

# On a Pi: sudo make install; at the station: sudo make install ROLE=station (docs/provisioning.md).
install:
	@./scripts/install.sh $(ROLE)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
