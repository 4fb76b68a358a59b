"""`make demo` stays true: scripts/demo.sh runs the whole story (device, broker, station, sync, purge)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from broker_fixture import mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_script_syncs_verifies_and_purges(tmp_path: Path) -> None:
    mosquitto_binary()  # skips (or fails in CI) without a broker, as the other sync tests do
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), DEMO=str(tmp_path / "demo"))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert out.count("INTACT:") == 2  # the station's copy and the device's store
    assert "missing required stages: none" in out
    assert "open problems 0" in out
    assert "segment files left on the device: 0" in out
    copy = tmp_path / "demo" / "station" / "data" / "devices" / "cam-demo" / "segments"
    assert len(list(copy.iterdir())) >= 2
