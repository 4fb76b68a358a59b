# Quick start: `make demo` then `make test`. Everything runs from the project's own virtualenv (.venv).
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := $(CURDIR)/.demo

.PHONY: venv demo test lint bench clean

venv:
	@./scripts/bootstrap.sh $(VENV)

demo: venv
	@rm -rf $(DEMO_DIR)
	@echo "== a simulated device records 8 s of real H.264 (synthetic camera, 4 s segments) into $(DEMO_DIR)/store"
	$(BIN)/bodycam-agent simulate --store $(DEMO_DIR)/store --seconds 8 --segment-seconds 4
	@echo "== the device's public key, as a technician enrolls it"
	$(BIN)/bodycam-provision show-key --key $(DEMO_DIR)/store/identity/device.key --pem > $(DEMO_DIR)/device.pub
	@echo "== an auditor verifies the store against that key"
	$(BIN)/bodycam-verify $(DEMO_DIR)/store --pubkey $(DEMO_DIR)/device.pub

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check agent sync firmware_config tests benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/bench_ledger.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
