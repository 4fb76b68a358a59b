"""Bad device configs are refused before anything starts: one message naming the file, the key and the problem.

Each bad config is the shipped example (firmware_config/device.example.toml, its paths moved into the test's
folder) with one thing wrong. It is checked twice: in-process through ``parse_device_config`` /
``load_device_config``, and through ``bodycam-agent run --config BAD`` in a real process (all of those started
several at once), which must exit 1 with exactly that message as its one line on stderr, no traceback, and create
nothing: no store, no key, no socket, nothing in its working folder.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from firmware_config.device_config import load_device_config, parse_device_config
from firmware_config.toml_write import dumps

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "firmware_config" / "device.example.toml"

Config = dict[str, Any]


def example(folder: Path) -> Config:
    """The example config with its store, key and socket inside ``folder`` and mock pins."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["device"]["store"] = str(folder / "store")
    data["device"]["key"] = str(folder / "identity" / "device.key")
    data["control_socket"]["path"] = str(folder / "control.sock")
    data["camera"]["backend"] = "synthetic"
    data["controls"]["pin_factory"] = "mock"
    return data


def no_stages_profiles(folder: Path) -> Path:
    """A profiles folder whose inspection profile has no stages."""
    profiles = folder / "profiles"
    profiles.mkdir()
    (profiles / "inspection.toml").write_text(
        'name = "inspection"\ntitle = "Inspection"\ncontinuous_recording = true\nstages = []\n', encoding="utf-8"
    )
    return profiles


def _set(*path: str, to: Any) -> Callable[[Config, Path], None]:
    def change(data: Config, folder: Path) -> None:
        table = data
        for name in path[:-1]:
            table = table.setdefault(name, {})
        table[path[-1]] = to

    return change


def _drop(*path: str) -> Callable[[Config, Path], None]:
    def change(data: Config, folder: Path) -> None:
        table = data
        for name in path[:-1]:
            table = table[name]
        del table[path[-1]]

    return change


def _profiles(data: Config, folder: Path) -> None:
    data["workflow"]["profiles"] = str(no_stages_profiles(folder))


def _profiles_missing(data: Config, folder: Path) -> None:
    data["workflow"]["profiles"] = str(folder / "no-such-folder")


@dataclass(frozen=True)
class Bad:
    id: str
    change: Callable[[Config, Path], None]
    key: str  # the key the message must name (quoted)
    problem: str  # and a piece of the problem
    also: tuple[str, ...] = ()  # anything else it must name


BAD = [
    Bad("unknown-button", _set("controls", "buttons", "shutter", to={"pin": 5}),
        "controls.buttons.shutter", "unknown button name 'shutter'"),
    Bad("pin-used-by-button-and-led", _set("controls", "feedback", "led_pin", to=17),
        "controls.feedback.led_pin", "is already used by controls.buttons.record.pin"),
    Bad("pin-used-twice-spelled-differently", _set("controls", "buttons", "stage", "pin", to="GPIO17"),
        "controls.buttons.stage.pin", "is already used by controls.buttons.record.pin"),
    Bad("profile-with-no-stages", _profiles, "workflow.profiles", "a profile needs at least one stage",
        also=("inspection.toml", "'stages'")),
    Bad("profiles-folder-missing", _profiles_missing, "workflow.profiles", "cannot be read", also=("no-such-folder",)),
    Bad("empty-stop-reasons", _set("workflow", "stop_reasons", to=[]), "workflow.stop_reasons",
        "value []: expected 1 to 9 reasons"),
    Bad("too-many-stop-reasons", _set("workflow", "stop_reasons", to=[f"reason {n}" for n in range(10)]),
        "workflow.stop_reasons", "expected 1 to 9 reasons"),
    Bad("unknown-table", _set("network", to={"wifi": "on"}), "network", "unknown table"),
    Bad("unknown-key-in-camera", _set("camera", "exposure", to=3), "camera.exposure", "unknown key"),
    Bad("unknown-key-in-button", _set("controls", "buttons", "mark", "debounce", to=3),
        "controls.buttons.mark.debounce", "unknown key"),
    Bad("width-is-text", _set("camera", "width", to="wide"), "camera.width",
        "value \"wide\": expected an integer, not a string"),
    Bad("fps-is-boolean", _set("camera", "fps", to=True), "camera.fps",
        "value true: expected an integer, not a boolean"),
    Bad("width-is-float", _set("camera", "width", to=320.5), "camera.width",
        "value 320.5: expected an integer, not a number"),
    Bad("stop-reasons-is-text", _set("workflow", "stop_reasons", to="device fault"), "workflow.stop_reasons",
        "expected an array, not a string"),
    Bad("stop-reason-not-text", _set("workflow", "stop_reasons", to=["device fault", 3]), "workflow.stop_reasons",
        "expected an array of strings"),
    Bad("bounce-is-float", _set("controls", "buttons", "record", "bounce_ms", to=2.5),
        "controls.buttons.record.bounce_ms", "whole number of milliseconds"),
    Bad("camera-is-not-a-table", _set("camera", to=5), "camera", "value 5: expected a table"),
    Bad("fps-out-of-range", _set("camera", "fps", to=500), "camera.fps", "value 500: expected 1..120"),
    Bad("width-out-of-range", _set("camera", "width", to=63), "camera.width", "value 63: expected 64..4096"),
    Bad("segment-seconds-zero", _set("recorder", "segment_seconds", to=0), "recorder.segment_seconds",
        "value 0: expected 1..600"),
    Bad("reason-window-too-short", _set("workflow", "reason_window_seconds", to=0.5),
        "workflow.reason_window_seconds", "value 0.5: expected 1..120"),
    Bad("floor-above-low-space", _set("recorder", "floor_mb", to=1024), "recorder.floor_mb",
        "value 1024: expected at most recorder.low_space_mb"),
    Bad("negative-pin", _set("controls", "buttons", "record", "pin", to=-1), "controls.buttons.record.pin",
        "must not be negative"),
    Bad("hold-not-longer-than-bounce", _set("controls", "buttons", "record", "hold_ms", to=30),
        "controls.buttons.record.hold_ms", "must be longer than bounce_ms"),
    Bad("missing-device-id", _drop("device", "id"), "device.id", "missing"),
    Bad("missing-device-table", _drop("device"), "device.id", "missing"),
    Bad("bad-device-id", _set("device", "id", to="../cam"), "device.id", "value \"../cam\": expected a name matching"),
    Bad("empty-officer", _set("device", "officer", to=""), "device.officer", "non-empty printable text"),
    Bad("empty-store-path", _set("device", "store", to=""), "device.store", "non-empty"),
    Bad("unknown-procedure", _set("workflow", "default_procedure", to="raid"), "workflow.default_procedure",
        "value \"raid\": expected a loaded procedure", also=("inspection", "penalty")),
    Bad("unknown-camera-backend", _set("camera", "backend", to="webcam"), "camera.backend",
        "value \"webcam\": expected one of"),
    Bad("unknown-pin-factory", _set("controls", "pin_factory", to="gpio"), "controls.pin_factory",
        "unknown pin factory 'gpio'"),
]  # fmt: skip


def bad_config(case: Bad, folder: Path) -> Config:
    data = example(folder)
    case.change(data, folder)
    return data


def check_message(message: str, source: str, case: Bad) -> None:
    assert "\n" not in message, message
    assert message.startswith(f"{source}: "), message  # the file first
    assert f"'{case.key}'" in message, message  # then the key
    assert case.problem in message, message  # and the problem
    for text in case.also:
        assert text in message, message


# --- in-process -----------------------------------------------------------------------------------------------


def test_the_example_with_tmp_paths_is_accepted(tmp_path: Path) -> None:
    """The control for every case below: unchanged, the same config parses (so each refusal is its change's)."""
    config = parse_device_config(example(tmp_path), "device.toml")
    assert (config.device_id, config.officer_id, config.store) == ("cam-0001", "A1234", tmp_path / "store")
    assert config.camera_backend == "synthetic" and config.controls.pin_factory == "mock"
    assert config.workflow.stop_reasons[2] == "party's privacy"
    assert sorted(config.workflow.procedures) == ["coercive-measure", "inspection", "licensing-site-check", "penalty"]
    written = tmp_path / "device.toml"
    written.write_text(dumps(example(tmp_path)), encoding="utf-8")
    assert load_device_config(written) == parse_device_config(example(tmp_path), str(written))


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_parse_refuses(tmp_path: Path, case: Bad) -> None:
    source = str(tmp_path / "device.toml")
    with pytest.raises(ConfigError) as caught:
        parse_device_config(bad_config(case, tmp_path), source)
    check_message(str(caught.value), source, case)


@pytest.mark.parametrize("case", BAD[:6], ids=[case.id for case in BAD[:6]])
def test_load_refuses_a_file(tmp_path: Path, case: Bad) -> None:
    path = tmp_path / "device.toml"
    path.write_text(dumps(bad_config(case, tmp_path)), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    check_message(str(caught.value), str(path), case)


def test_load_refuses_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^{missing}: no such file$"):
        load_device_config(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text('[device]\nid = "cam-0001"\nofficer = \n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_device_config(broken)
    message = str(caught.value)
    assert message.startswith(f"{broken}: is not valid TOML") and "line 3" in message and "\n" not in message
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[device]\n")
    with pytest.raises(ConfigError, match=rf"^{binary}: is not UTF-8 text"):
        load_device_config(binary)


# --- bodycam-agent run --config BAD ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    folder: Path
    config: Path
    expected: str  # the ConfigError message parse_device_config gives for the same file
    code: int
    stdout: str
    stderr: str
    seconds: float


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    for name in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA"):
        env.pop(name, None)
    return env


def _open_time_cases() -> list[Bad]:
    """Problems only found when the pins are opened: still refused before anything is created."""
    cases = [
        # Two spellings of one physical pin (BOARD11 is GPIO17 on the mock Pi): gpiozero's reservation finds it.
        Bad("same-pin-as-board-number", _set("controls", "buttons", "stage", "pin", to="BOARD11"),
            "controls.buttons.stage.pin", "cannot be used"),
    ]  # fmt: skip
    if importlib.util.find_spec("lgpio") is None:  # off a Pi: the configured real pin factory cannot open
        cases.append(Bad("pin-factory-unavailable", _set("controls", "pin_factory", to="lgpio"),
                         "controls.pin_factory", "cannot be opened"))  # fmt: skip
    return cases


OPEN_TIME = _open_time_cases()
ALL = BAD + OPEN_TIME


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    """``bodycam-agent run --config`` on every bad config, several at once, each in a folder of its own."""
    root = tmp_path_factory.mktemp("refusals")

    def refuse(case: Bad) -> Refusal:
        folder = root / case.id
        folder.mkdir()
        data = bad_config(case, folder)
        config = folder / "device.toml"
        config.write_text(dumps(data), encoding="utf-8")
        try:
            parse_device_config(data, str(config))
            expected = ""  # found only when the pins are opened
        except ConfigError as exc:
            expected = str(exc)
        began = time.monotonic()
        try:
            result = subprocess.run(
                [str(BIN / "bodycam-agent"), "run", "--config", str(config)],
                capture_output=True, text=True, cwd=folder, env=_env(), timeout=60, check=False,
            )  # fmt: skip
            code, out, err = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired:  # killed by subprocess.run
            code, out, err = -1, "", "still running after 60 s: the daemon started on a bad config\n"
        return Refusal(folder, config, expected, code, out, err, time.monotonic() - began)

    with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1))) as pool:
        return dict(zip((case.id for case in ALL), pool.map(refuse, ALL), strict=True))


@pytest.mark.parametrize("case", ALL, ids=[case.id for case in ALL])
def test_run_refuses_and_creates_nothing(refusals: dict[str, Refusal], case: Bad) -> None:
    run = refusals[case.id]
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    assert run.code == 2, (run.code, run.stderr)
    assert run.stdout == ""
    assert run.stderr.endswith("\n") and run.stderr.count("\n") == 1, repr(run.stderr)  # exactly one line
    prefix = "bodycam-agent: "
    assert run.stderr.startswith(prefix), run.stderr
    message = run.stderr[len(prefix) : -1]
    check_message(message, str(run.config), case)
    if run.expected:
        assert message == run.expected  # the same words as the in-process check
    # Nothing created: the folder holds only what the test put there (the config, a profiles folder).
    made_by_test = {"device.toml"} | ({"profiles"} if case.id == "profile-with-no-stages" else set())
    assert set(os.listdir(run.folder)) == made_by_test, sorted(os.listdir(run.folder))
    assert not (run.folder / "store").exists() and not (run.folder / "identity").exists()
