"""The shipped hardware profiles (firmware_config/hardware/*.toml): each merged into a minimal device config
validates (in-process, and once through ``bodycam-agent run --validate-config``), its pins open together on
gpiozero's MockFactory for its own board, and docs/wiring.md's tables say what the profiles and gpiozero's
header data say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.controls.buttons import ButtonPanel
from agent.controls.feedback import FeedbackDriver
from agent.errors import ConfigError
from agent.workflow.events import Button
from firmware_config.controls import from_mapping, pin_label
from firmware_config.device_config import MIB, parse_device_config, prebuffer_need_bytes
from firmware_config.hardware import hardware_names, hardware_profile_path, load_hardware_profile
from firmware_config.toml_write import dumps

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WIRING = ROOT / "docs" / "wiring.md"
# The boards each profile is for, as gpiozero's revision codes (Pi 4B 4 GB, Pi 5 4 GB, Zero 2 W); synthetic
# runs on MockFactory's default board.
BOARDS = {"pi4-pi5": ("a03111", "c04170"), "pi-zero-2w": ("902120",), "synthetic": (None,)}
# Pins with another job on these boards: ID EEPROM, I2C1, UART, SPI0, PCM/I2S (docs/wiring.md).
RESERVED = {0, 1, 2, 3, 14, 15, 7, 8, 9, 10, 11, 18, 19, 20, 21}
FUNCTIONS = {"record button": ("buttons", "record"), "stage button": ("buttons", "stage"),
             "mark button": ("buttons", "mark"), "LED": ("feedback", "led_pin"), "buzzer": ("feedback", "buzzer_pin")}


def merged(name: str, folder: Path) -> dict[str, Any]:
    """A minimal device config (only [device]) with the profile merged in, as bodycam-provision init does."""
    return {"device": {"id": "cam-1", "officer": "A1", "store": str(folder / "store"),
                       "key": str(folder / "device.key"), "enrolled_fingerprint": ""},
            "control_socket": {"path": str(folder / "control.sock")},
            **load_hardware_profile(name)}


def header_pin(board: Any, gpio: str) -> int:
    """The J8 header pin of ``gpio`` on ``board`` (gpiozero's BoardInfo)."""
    found = [info.number for header, info in board.find_pin(gpio) if header.name == "J8"]
    assert len(found) == 1, (gpio, found)
    return int(found[0])


def used_pins(name: str) -> dict[str, int]:
    controls = load_hardware_profile(name)["controls"]
    pins = {f"{b} button": table["pin"] for b, table in controls["buttons"].items()}
    pins["LED"] = controls["feedback"]["led_pin"]
    pins["buzzer"] = controls["feedback"]["buzzer_pin"]
    return pins


def test_the_shipped_names() -> None:
    assert hardware_names() == ["pi-zero-2w", "pi4-pi5", "synthetic"]
    assert set(BOARDS) == set(hardware_names())
    assert hardware_profile_path("pi4-pi5") == ROOT / "firmware_config" / "hardware" / "pi4-pi5.toml"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "hardware/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["firmware_config"]  # installed too


@pytest.mark.parametrize("name", ["pi3", "../device.example", "", "PI4-PI5"])
def test_an_unknown_name_is_refused_naming_the_known_ones(name: str) -> None:
    for call in (hardware_profile_path, load_hardware_profile):
        with pytest.raises(ConfigError) as caught:
            call(name)
        assert str(caught.value) == f"hardware profile {name!r}: unknown (known: pi-zero-2w, pi4-pi5, synthetic)"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_a_profile_holds_only_camera_recorder_and_controls(name: str) -> None:
    profile = load_hardware_profile(name)
    assert set(profile) <= {"camera", "recorder", "controls"} and {"camera", "controls"} <= set(profile)
    assert profile is not load_hardware_profile(name)  # a fresh dict each time: callers may merge into it


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_a_profile_merged_into_a_minimal_config_validates(name: str, tmp_path: Path) -> None:
    config = parse_device_config(merged(name, tmp_path), "device.toml")
    profile = load_hardware_profile(name)
    assert config.camera_backend == profile["camera"]["backend"]
    assert (config.camera.width, config.camera.height, config.camera.fps) == (
        profile["camera"]["width"], profile["camera"]["height"], profile["camera"]["fps"])
    assert config.controls.button(Button.RECORD).pin == profile["controls"]["buttons"]["record"]["pin"]
    # The default pre-event buffer fits the profile's budget with room to spare.
    need = prebuffer_need_bytes(config.prebuffer_seconds, config.camera.bitrate)
    assert need < config.memory_budget_bytes
    assert not (set(used_pins(name).values()) & RESERVED), used_pins(name)


def test_the_pi_zero_is_lighter_than_the_pi_4() -> None:
    zero, pi4 = load_hardware_profile("pi-zero-2w"), load_hardware_profile("pi4-pi5")
    assert (zero["camera"]["width"], zero["camera"]["height"]) == (1280, 720)
    assert (pi4["camera"]["width"], pi4["camera"]["height"], pi4["camera"]["backend"]) == (1920, 1080, "picamera2")
    assert zero["camera"]["bitrate"] < pi4["camera"]["bitrate"]
    assert zero["recorder"]["memory_budget_mb"] * MIB < parse_device_config(
        {"device": {"id": "a", "officer": "b", "store": "/s", "key": "/k"}}, "x").memory_budget_bytes
    synthetic = load_hardware_profile("synthetic")
    assert (synthetic["camera"]["backend"], synthetic["controls"]["pin_factory"]) == ("synthetic", "mock")


def test_a_broken_profile_is_refused_naming_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "hardware"
    folder.mkdir()
    shipped = hardware_profile_path("pi4-pi5").read_text(encoding="utf-8")
    (folder / "twice.toml").write_text(shipped.replace("led_pin = 23", "led_pin = 17"), encoding="utf-8")
    (folder / "extra.toml").write_text('[device]\nid = "x"\n', encoding="utf-8")
    monkeypatch.setattr("firmware_config.hardware.HARDWARE_DIR", folder)
    with pytest.raises(ConfigError, match=r"twice\.toml: key 'controls.feedback.led_pin': value 17: .*GPIO17"):
        load_hardware_profile("twice")
    with pytest.raises(ConfigError, match=r"extra\.toml: key 'device': unknown table: expected only camera"):
        load_hardware_profile("extra")


@pytest.mark.parametrize(("name", "revision"), [(n, r) for n, revs in sorted(BOARDS.items()) for r in revs])
def test_the_pins_open_together_on_the_board(name: str, revision: str | None) -> None:
    """Every button and output of the profile opens at once on a mock of its board: no pin is taken twice
    (in any spelling) and each one exists there."""
    controls = from_mapping(load_hardware_profile(name)["controls"], "profile")
    factory = MockFactory(revision=revision) if revision else MockFactory()
    try:
        with ButtonPanel(config=controls, on_press=lambda press: None, pin_factory=factory) as panel:
            driver = FeedbackDriver(controls, pin_factory=factory)
            try:
                for button in controls.buttons:  # each button's pin idles high: the pull-up is on
                    assert factory.pin(button.pin).state == 1 and not panel.is_pressed(button.name), button
                opened = {pin_label(info.name) for info in factory.pins}
                assert {pin_label(p) for p in used_pins(name).values()} <= opened
            finally:
                driver.close()
    finally:
        factory.reset()


def _wiring_tables() -> dict[str, list[dict[str, str]]]:
    """docs/wiring.md's tables, by profile section: rows of Function, BCM GPIO, Header pin, Wire to."""
    tables: dict[str, list[dict[str, str]]] = {}
    section = ""
    header: list[str] = []
    for line in WIRING.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## (\S+):", line)
        if heading:
            section, header = heading.group(1), []
            continue
        if not section or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if not header:
            header = cells
        elif not set(cells[0]) <= {"-"}:
            tables.setdefault(section, []).append(dict(zip(header, cells, strict=True)))
    return tables


@pytest.mark.parametrize("name", ["pi4-pi5", "pi-zero-2w"])
def test_the_wiring_table_matches_the_profile_and_the_header(name: str) -> None:
    rows = _wiring_tables()[name]
    pins = used_pins(name)
    assert {row["Function"] for row in rows} == set(FUNCTIONS) == set(pins)
    for revision in BOARDS[name]:
        assert revision is not None
        board = MockFactory(revision=revision).board_info
        for row in rows:
            assert row["BCM GPIO"] == f"GPIO{pins[row['Function']]}", row
            assert header_pin(board, row["BCM GPIO"]) == int(row["Header pin"]), (revision, row)
            ground = int(row["Wire to"].removeprefix("GND pin "))
            assert board.headers["J8"].pins[ground].name == "GND", (revision, row)


def test_the_profile_comments_name_the_right_header_pins() -> None:
    """The profiles' own comments ("header pin 11") agree with gpiozero's data too."""
    board = MockFactory(revision="902120").board_info  # the 40-pin header is the same on all three boards
    for name in ("pi4-pi5", "pi-zero-2w"):
        text = hardware_profile_path(name).read_text(encoding="utf-8")
        found = re.findall(r"^\w+ = (\d+) +# header pin (\d+)", text, flags=re.MULTILINE)
        assert len(found) == 5, found
        for gpio, number in found:
            assert header_pin(board, f"GPIO{gpio}") == int(number), (name, gpio)


def test_bodycam_agent_validates_a_config_written_from_a_profile(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(dumps(merged("synthetic", tmp_path)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA")}
    result = subprocess.run([str(BIN / "bodycam-agent"), "run", "--config", str(config), "--validate-config"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "valid" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["device.toml"]  # nothing created
    bad = tmp_path / "bad.toml"
    data = merged("synthetic", tmp_path)
    data["recorder"] = {"prebuffer_seconds": 120, "memory_budget_mb": 8}
    bad.write_text(dumps(data), encoding="utf-8")
    result = subprocess.run([str(BIN / "bodycam-agent"), "run", "--config", str(bad), "--validate-config"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{bad}: key 'recorder.prebuffer_seconds': value 120: expected" in result.stderr
