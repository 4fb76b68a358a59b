"""The lock files: every pin hashed and inside pyproject.toml's ranges, the Pi's on NumPy 1.x, and the
virtualenv the suite runs in holding exactly what requirements.lock names (docs/dependencies.md)."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# What a virtualenv holds besides the lock: its own installer, and this project (installed editable).
NOT_LOCKED = {"pip", "bodycam"}


def pins(path: Path) -> dict[str, Version]:
    """name -> version of every `name==version` line, each checked to carry at least one sha256 hash."""
    found: dict[str, Version] = {}
    text = path.read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        assert "--hash=sha256:" in block, f"{path.name}: {name} has no hash"
        assert name not in found, f"{path.name}: {name} pinned twice"
        found[name] = Version(match.group(2))
    return found


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def check_ranges(locked: dict[str, Version], requirements: list[str], lock: str) -> None:
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock}: {name} is required by pyproject.toml but not pinned"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock}: {name}=={locked[name]} is outside pyproject.toml's {requirement.specifier}")


def test_the_lock_pins_every_runtime_and_dev_dependency_inside_pyprojects_ranges() -> None:
    locked = pins(ROOT / "requirements.lock")
    meta = project()
    check_ranges(locked, [*meta["dependencies"], *meta["optional-dependencies"]["dev"]],  # type: ignore[misc]
                 "requirements.lock")


def test_the_station_gets_the_versions_the_suite_runs_with() -> None:
    station, suite = pins(ROOT / "requirements-station.lock"), pins(ROOT / "requirements.lock")
    check_ranges(station, list(project()["dependencies"]), "requirements-station.lock")  # type: ignore[call-overload]
    assert {name: version for name, version in station.items() if suite.get(name) != version} == {}
    assert "pytest" not in station and "uv" not in station  # runtime only


def test_the_pi_lock_pins_the_runtime_on_numpy_1_and_leaves_picamera2_to_the_os() -> None:
    locked = pins(ROOT / "requirements-pi.lock")
    check_ranges(locked, list(project()["dependencies"]), "requirements-pi.lock")  # type: ignore[call-overload]
    assert locked["numpy"] < Version("2"), "the OS's picamera2 stack is built against NumPy 1.x"
    assert "picamera2" not in locked and "pytest" not in locked


def test_the_virtualenv_holds_exactly_the_lock() -> None:
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"the suite runs outside the project's virtualenv ({sys.prefix})")
    locked = pins(ROOT / "requirements.lock")
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    extra = sorted(set(installed) - set(locked) - NOT_LOCKED)
    missing = sorted(set(locked) - set(installed))
    differ = sorted(f"{n} {installed[n]} (lock {v})" for n, v in locked.items() if n in installed and installed[n] != v)
    assert not (extra or missing or differ), (
        f"the virtualenv is not requirements.lock (run 'make venv' after removing .venv): "
        f"not in the lock {extra}, not installed {missing}, other versions {differ}")
