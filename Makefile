# Quick start: `make demo` then `make test`. Everything runs from the project's own virtualenv (.venv).
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := $(CURDIR)/.demo

.PHONY: venv demo test lint bench clean

venv:
	@./scripts/bootstrap.sh $(VENV)

demo: venv
	@rm -rf $(DEMO_DIR)
	@echo "== a simulated officer runs a complete inspection (scripted buttons, synthetic camera, real H.264)"
	$(BIN)/bodycam-agent simulate --store $(DEMO_DIR)/store --officer-id A1234 \
		--scenario firmware_config/scenarios/complete-inspection.toml --segment-seconds 10
	@echo "== the device's public key, as a technician enrolls it"
	$(BIN)/bodycam-provision show-key --key $(DEMO_DIR)/store/identity/device.key --pem > $(DEMO_DIR)/device.pub
	@echo "== an auditor verifies the store against that key"
	$(BIN)/bodycam-verify $(DEMO_DIR)/store --pubkey $(DEMO_DIR)/device.pub --timeline

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check agent sync firmware_config tests benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/bench_ledger.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
