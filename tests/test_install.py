"""`make install` (scripts/install.sh): the program and the units land where the units expect them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize(
    ("role", "units", "etc"),
    [
        ("device", ["bodycam-agent.service", "bodycam-sync.service"], "etc/bodycam"),
        ("station", ["bodycam-broker.service", "bodycam-station.service"], "etc/bodycam-station"),
    ],
)
def test_install_puts_program_and_units_in_place(role: str, units: list[str], etc: str, tmp_path: Path) -> None:
    result = install(role, "--destdir", str(tmp_path), "--no-venv")
    assert result.returncode == 0, result.stderr
    installed = sorted(p.name for p in (tmp_path / "etc/systemd/system").iterdir())
    assert installed == units
    for unit in units:  # byte-identical to the shipped unit, and what it runs is part of the copied program
        text = (tmp_path / "etc/systemd/system" / unit).read_text()
        assert text == (ROOT / "systemd" / unit).read_text()
        assert "/opt/bodycam/.venv/bin/" in text or "mosquitto" in text
    assert (tmp_path / etc).is_dir()
    program = tmp_path / "opt/bodycam"
    for needed in ("pyproject.toml", "agent/daemon.py", "sync/station/cli.py", "firmware_config/profiles"):
        assert (program / needed).exists(), needed
    assert not (program / ".venv").exists() and not (program / ".git").exists()

    again = install(role, "--destdir", str(tmp_path), "--no-venv")  # repeatable: an upgrade is the same command
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "etc/systemd/system").iterdir()) == units


@pytest.mark.parametrize("args", [[], ["camera"], ["device", "--bogus"], ["device", "--destdir"]])
def test_install_refuses_bad_arguments(args: list[str], tmp_path: Path) -> None:
    result = install(*args)
    assert result.returncode == 2
    assert "usage: scripts/install.sh device|station" in result.stderr
