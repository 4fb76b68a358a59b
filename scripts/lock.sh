#!/usr/bin/env bash
# `make lock`: refresh the lock files from pyproject.toml's ranges, on purpose (docs/dependencies.md).
#   requirements.lock          every runtime and dev dependency, CPython 3.11 on x86_64 Linux (make venv,
#                              the suite, CI)
#   requirements-station.lock  the runtime dependencies only, same machine (make install ROLE=station)
#   requirements-pi.lock  the runtime dependencies on a Raspberry Pi: CPython 3.11 (Bookworm's) on aarch64,
#                         NumPy held to the OS's 1.x line (scripts/pi-os-constraints.txt); picamera2 itself
#                         comes from Raspberry Pi OS (python3-picamera2), matched to its libcamera.
# Pins already in a lock file are kept unless a range no longer admits them; UPGRADE=1 takes the newest
# release of everything, UPGRADE_PACKAGE=NAME of one package. Only wheels are accepted (--only-binary), so
# what a lock names can be installed without a compiler on both machines.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
if [ ! -x "$uv" ]; then
  echo "lock: $uv is missing: run 'make venv' first (uv is a dev dependency)" >&2
  exit 2
fi
upgrade=()
if [ -n "${UPGRADE:-}" ]; then upgrade+=(--upgrade); fi
if [ -n "${UPGRADE_PACKAGE:-}" ]; then upgrade+=(--upgrade-package "$UPGRADE_PACKAGE"); fi
common=(--python-version 3.11 --only-binary :all: --generate-hashes --custom-compile-command "make lock"
        --no-progress --quiet)
"$uv" pip compile pyproject.toml --extra dev --python-platform x86_64-unknown-linux-gnu "${common[@]}" \
  "${upgrade[@]}" -o requirements.lock
"$uv" pip compile pyproject.toml --python-platform x86_64-unknown-linux-gnu "${common[@]}" "${upgrade[@]}" \
  -o requirements-station.lock
"$uv" pip compile pyproject.toml --python-platform aarch64-unknown-linux-gnu -c scripts/pi-os-constraints.txt \
  "${common[@]}" "${upgrade[@]}" -o requirements-pi.lock
echo "lock: requirements.lock, requirements-station.lock and requirements-pi.lock written; 'make venv' installs the new pins, then 'make test'"
