# Quick start: `make demo` then `make test`. Everything runs from the project's own virtualenv (.venv).
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := $(CURDIR)/.demo

.PHONY: venv demo test lint bench clean install
ROLE ?= device

venv:
	@./scripts/bootstrap.sh $(VENV)

demo: venv
	@./scripts/demo.sh

test: venv
	$(BIN)/python -m pytest -q

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
