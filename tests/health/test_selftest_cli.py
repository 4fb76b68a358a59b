"""``bodycam-agent selftest --config FILE [--json]``: 0 pass, 1 fail, 2 bad config; nothing created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_daemon import daemon_config

BIN = Path(sys.executable).parent


def selftest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    for name in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA"):
        env.pop(name, None)
    result = subprocess.run([str(BIN / "bodycam-agent"), "selftest", *args], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_pass_then_fail(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, tmp_path / "control.sock")
    key = tmp_path / "identity" / "device.key"
    missing = selftest("--config", str(config), "--json")
    assert missing.returncode == 1
    outcome = json.loads(missing.stdout)
    assert outcome["passed"] is False and outcome["summary"] == f"self-test failed: key: key file {key}: not found"
    assert [(c["name"], c["ok"]) for c in outcome["checks"]] == [
        ("camera", True), ("store", True), ("clock", True), ("key", False)
    ]
    assert not key.exists() and not (tmp_path / "store").exists()  # the technician's run creates nothing

    from agent.evidence.keys import load_or_create_device_key

    load_or_create_device_key(key)
    passed = selftest("--config", str(config))
    assert passed.returncode == 0, passed.stdout
    lines = passed.stdout.splitlines()
    assert lines[0].startswith("ok   camera  ") and lines[-1].startswith("self-test passed; clock ")
    assert not (tmp_path / "store").exists() and not (tmp_path / "health.json").exists()


def test_bad_config_exits_2(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, tmp_path / "control.sock")
    text = config.read_text()
    assert text.count("selftest_frames = 15") == 1  # device.example.toml's [health]
    config.write_text(text.replace("selftest_frames = 15", "selftest_frames = 0"))
    result = selftest("--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"bodycam-agent: {config}: key 'health.selftest_frames': "), result.stderr
