"""A table of bad device and station configs: each is refused naming the file, the key, the value and what is
expected, in one shape: ``FILE: key 'dotted.key': value VALUE: expected ...``.

Every case starts from a config that parses (checked first, so each refusal is its change's) and changes one
thing; cross-field cases name both keys.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from firmware_config.device_config import (
    CHUNK_FRAMING_BYTES,
    PREBUFFER_MARGIN,
    load_device_config,
    parse_device_config,
    prebuffer_need_bytes,
)
from firmware_config.station_config import load_station_config, parse_station_config
from firmware_config.toml_write import dumps

Config = dict[str, Any]
DEVICE_FILE = "/etc/bodycam/device.toml"
STATION_FILE = "/etc/bodycam-station/station.toml"
SHAPE = re.compile(r"^(?P<file>[^:]+): key '(?P<key>[^']+)': (?:value (?P<value>.+?): )?(?:missing: |unknown (?:key|"
                   r"table): )?expected (?P<expected>.+)$")
FINGERPRINT = "ab" * 32


def device_base() -> Config:
    return {
        "device": {"id": "cam-1", "officer": "A1", "store": "/srv/store", "key": "/srv/device.key"},
        "camera": {"backend": "synthetic"},
        "controls": {"pin_factory": "mock", "buttons": {"record": {"pin": 17}, "stage": {"pin": 27},
                                                        "mark": {"pin": 22}},
                     "feedback": {"led_pin": 23, "buzzer_pin": 24}},
    }


def station_base() -> Config:
    return {"station": {"id": "st-1", "data": "/srv/data", "key": "/srv/ack.key"}}


def put(*path: str, to: Any) -> Callable[[Config], None]:
    def change(data: Config) -> None:
        table = data
        for name in path[:-1]:
            table = table.setdefault(name, {})
        table[path[-1]] = to

    return change


def puts(*changes: Callable[[Config], None]) -> Callable[[Config], None]:
    def change(data: Config) -> None:
        for one in changes:
            one(data)

    return change


def drop(*path: str) -> Callable[[Config], None]:
    def change(data: Config) -> None:
        table = data
        for name in path[:-1]:
            table = table[name]
        del table[path[-1]]

    return change


@dataclass(frozen=True)
class Bad:
    id: str
    change: Callable[[Config], None]
    key: str  # the key the message names
    value: str | None  # the value as the message spells it (None: a missing or unknown key)
    expected: str  # a piece of what is expected
    also: tuple[str, ...] = field(default=())  # anything else it must name (the other key of a conflict)


DEVICE_BAD = [
    # one key at a time
    Bad("unknown-table", put("network", to={"wifi": True}), "network", None, "device, camera"),
    Bad("unknown-key", put("recorder", "prebuffer", to=5), "recorder.prebuffer", None, "segment_seconds"),
    Bad("missing-officer", drop("device", "officer"), "device.officer", None, "a string"),
    Bad("fps-text", put("camera", "fps", to="30"), "camera.fps", '"30"', "an integer, not a string"),
    Bad("fps-bool", put("camera", "fps", to=True), "camera.fps", "true", "an integer, not a boolean"),
    Bad("fps-range", put("camera", "fps", to=0), "camera.fps", "0", "1..120"),
    Bad("odd-width", put("camera", "width", to=1281), "camera.width", "1281", "an even number of pixels"),
    Bad("bitrate-range", put("camera", "bitrate", to=99_999), "camera.bitrate", "99999", "100000..50000000"),
    Bad("backend", put("camera", "backend", to="v4l2"), "camera.backend", '"v4l2"', "one of synthetic, opencv"),
    Bad("camera-not-table", put("camera", to="synthetic"), "camera", '"synthetic"', "a table"),
    Bad("device-id", put("device", "id", to="cam 1"), "device.id", '"cam 1"', "a name matching"),
    Bad("officer-too-long", put("device", "officer", to="x" * 65), "device.officer", '"xxx', "1-64 characters"),
    Bad("fingerprint-short", put("device", "enrolled_fingerprint", to="ab12"), "device.enrolled_fingerprint",
        '"ab12"', "64 lowercase hex digits"),
    Bad("fingerprint-upper", put("device", "enrolled_fingerprint", to=FINGERPRINT.upper()),
        "device.enrolled_fingerprint", '"ABAB', "SHA-256 fingerprint"),
    Bad("fingerprint-not-text", put("device", "enrolled_fingerprint", to=1), "device.enrolled_fingerprint", "1",
        "a string"),
    Bad("memory-budget-range", put("recorder", "memory_budget_mb", to=2), "recorder.memory_budget_mb", "2", "4.."),
    Bad("max-message-too-small", put("sync", "max_message_kib", to=64), "sync.max_message_kib", "64", "65..262143"),
    Bad("max-message-too-large", put("sync", "max_message_kib", to=262144), "sync.max_message_kib", "262144",
        "65..262143"),
    Bad("scan-seconds", put("sync", "scan_seconds", to=0.05), "sync.scan_seconds", "0.05", "0.1..3600"),
    Bad("tls-with-broker", put("sync", "broker_host", to="station.local"), "sync.ca", '""',
        "required when sync.broker_host is set"),
    Bad("stop-reasons", put("workflow", "stop_reasons", to=["fault", 2]), "workflow.stop_reasons", '["fault", 2]',
        "an array of strings"),
    Bad("stop-reasons-empty", put("workflow", "stop_reasons", to=[]), "workflow.stop_reasons", "[]",
        "1 to 9 reasons"),
    Bad("stop-reason-twice", put("workflow", "stop_reasons", to=["fault", "fault"]), "workflow.stop_reasons",
        '["fault", "fault"]', "each reason once"),
    Bad("stop-reason-blank", put("workflow", "stop_reasons", to=["fault", " "]), "workflow.stop_reasons[2]", '" "',
        "printable text of 1-100 characters"),
    Bad("unknown-procedure", put("workflow", "default_procedure", to="raid"), "workflow.default_procedure",
        '"raid"', "a loaded procedure (coercive-measure, inspection, licensing-site-check, penalty)"),
    Bad("profiles-folder", put("workflow", "profiles", to="/no/such/profiles"), "workflow.profiles",
        '"/no/such/profiles"', "a folder of valid procedure profiles", also=("cannot be read",)),
    # settings that conflict
    Bad("floor-above-low", put("recorder", "floor_mb", to=600), "recorder.floor_mb", "600",
        "at most recorder.low_space_mb (512)"),
    Bad("prebuffer-over-budget", put("recorder", "prebuffer_seconds", to=60), "recorder.prebuffer_seconds", "60",
        "fits recorder.memory_budget_mb (64 MiB)", also=("camera.bitrate 8000000", "needs 87.3 MiB")),
    Bad("bitrate-over-budget", put("camera", "bitrate", to=20_000_000), "recorder.prebuffer_seconds", "30.0",
        "fits recorder.memory_budget_mb", also=("camera.bitrate 20000000", "needs 110.9 MiB")),
    Bad("budget-under-prebuffer", put("recorder", "memory_budget_mb", to=40), "recorder.prebuffer_seconds", "30.0",
        "recorder.memory_budget_mb (40 MiB)", also=("needs 44.3 MiB",)),
    Bad("chunk-over-message", put("sync", "chunk_kib", to=4096), "sync.chunk_kib", "4096",
        "fits sync.max_message_kib (4096 KiB = 4194304 bytes)", also=(f"{CHUNK_FRAMING_BYTES} bytes of framing",)),
    Bad("message-under-chunk", put("sync", "max_message_kib", to=200), "sync.chunk_kib", "256",
        "sync.max_message_kib (200 KiB"),
    Bad("batch-over-message", puts(put("sync", "max_message_kib", to=100), put("sync", "chunk_kib", to=64),
                                   put("sync", "batch_kib", to=100)),
        "sync.batch_kib", "100", "fits sync.max_message_kib (100 KiB = 102400 bytes)", also=("512 bytes",)),
    Bad("button-pin-twice", put("controls", "buttons", "mark", "pin", to=27), "controls.buttons.mark.pin", "27",
        "a pin no other button or output uses", also=("GPIO27", "controls.buttons.stage.pin")),
    Bad("led-on-button-pin", put("controls", "feedback", "led_pin", to="GPIO17"), "controls.feedback.led_pin",
        '"GPIO17"', "a pin no other", also=("GPIO17", "controls.buttons.record.pin")),
    Bad("buzzer-on-button-pin", put("controls", "feedback", "buzzer_pin", to=22), "controls.feedback.buzzer_pin",
        "22", "a pin no other", also=("controls.buttons.mark.pin",)),
]  # fmt: skip

STATION_BAD = [
    Bad("unknown-table", put("stations", to={}), "stations", None, "station, broker, limits, deadline"),
    Bad("unknown-key", put("limits", "max_message", to=1), "limits.max_message", None, "max_message_bytes"),
    Bad("missing-key", drop("station", "key"), "station.key", None, "a string"),
    Bad("port-text", put("broker", "port", to="8883"), "broker.port", '"8883"', "an integer, not a string"),
    Bad("message-under-one-line", put("limits", "max_message_bytes", to=65535), "limits.max_message_bytes",
        "65535", "65536..268435455"),
    Bad("station-id", put("station", "id", to="st/1"), "station.id", '"st/1"', "a name matching"),
    Bad("weekday", put("deadline", "weekend", to=["sunday", "sundae"]), "deadline.weekend[1]", '"sundae"',
        "a weekday name"),
    Bad("holiday", put("deadline", "holidays", to=["25-12-2024"]), "deadline.holidays[0]", '"25-12-2024"',
        'a date "YYYY-MM-DD"'),
    Bad("timezone", put("deadline", "timezone", to="CET+1"), "deadline.timezone", '"CET+1"', "an IANA time zone"),
    # settings that conflict: the three TLS files go together
    Bad("tls-cert-alone", put("broker", "cert", to="/srv/station.pem"), "broker.ca", '""',
        "broker.ca, broker.cert and broker.key are set together", also=("broker.cert is set",)),
    Bad("tls-key-missing", puts(put("broker", "ca", to="/srv/ca.pem"), put("broker", "cert", to="/srv/s.pem")),
        "broker.key", '""', "set together", also=("broker.ca is set",)),
]  # fmt: skip


def check(message: str, source: str, case: Bad) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    match = SHAPE.match(message)
    assert match is not None, f"not FILE: key 'K': value V: expected E: {message}"
    assert match["file"] == source and match["key"] == case.key, message
    if case.value is not None:
        assert match["value"] is not None and match["value"].startswith(case.value), message
    assert case.expected in match["expected"], message
    for text in case.also:
        assert text in message, message


def test_the_bases_are_accepted() -> None:
    """The control for every case: unchanged, both configs parse."""
    config = parse_device_config(device_base(), DEVICE_FILE)
    assert config.enrolled_fingerprint == "" and config.sync.max_message_bytes == 4 * 1024 * 1024
    assert config.memory_budget_bytes == 64 * 1024 * 1024
    assert parse_station_config(station_base(), STATION_FILE).station_id == "st-1"


@pytest.mark.parametrize("case", DEVICE_BAD, ids=[case.id for case in DEVICE_BAD])
def test_device_config_refusals(case: Bad) -> None:
    data = device_base()
    case.change(data)
    before = copy.deepcopy(data)
    with pytest.raises(ConfigError) as caught:
        parse_device_config(data, DEVICE_FILE)
    check(str(caught.value), DEVICE_FILE, case)
    assert data == before  # the parsed mapping is not changed


@pytest.mark.parametrize("case", STATION_BAD, ids=[case.id for case in STATION_BAD])
def test_station_config_refusals(case: Bad) -> None:
    data = station_base()
    case.change(data)
    with pytest.raises(ConfigError) as caught:
        parse_station_config(data, STATION_FILE)
    check(str(caught.value), STATION_FILE, case)


FILE_CASES = [case for case in DEVICE_BAD if case.id in ("unknown-table", "prebuffer-over-budget", "chunk-over-message",
                                                          "led-on-button-pin", "fingerprint-short")]


@pytest.mark.parametrize("case", FILE_CASES, ids=[case.id for case in FILE_CASES])
def test_a_file_is_named_by_its_path(tmp_path: Path, case: Bad) -> None:
    data = device_base()
    case.change(data)
    path = tmp_path / "device.toml"
    path.write_text(dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_device_config(path)
    check(str(caught.value), str(path), case)


def test_station_file_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(dumps({**station_base(), "broker": {"key": "/srv/k.pem"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: key 'broker.ca': value \"\": expected"):
        load_station_config(path)


# --- the edges of the cross-field rules ----------------------------------------------------------------------


def test_the_memory_rule_at_its_edge() -> None:
    """The budget is a bound, not a guess: the largest prebuffer that fits is accepted, a hair more refused."""
    bitrate, budget_mb = 8_000_000, 64
    fits = budget_mb * 1024 * 1024 / (bitrate / 8 * PREBUFFER_MARGIN) - 1.0  # seconds, GOP aside
    assert prebuffer_need_bytes(fits, bitrate) <= budget_mb * 1024 * 1024
    base = device_base()
    base["camera"]["bitrate"] = bitrate
    base["recorder"] = {"prebuffer_seconds": round(fits - 0.01, 2), "memory_budget_mb": budget_mb}
    parse_device_config(base, DEVICE_FILE)
    base["recorder"]["prebuffer_seconds"] = round(fits + 0.01, 2)
    with pytest.raises(ConfigError, match=r"key 'recorder\.prebuffer_seconds'"):
        parse_device_config(base, DEVICE_FILE)
    base["recorder"]["memory_budget_mb"] = budget_mb + 1  # a bigger budget takes it
    parse_device_config(base, DEVICE_FILE)


def test_the_message_rules_at_their_edge() -> None:
    base = device_base()
    base["sync"] = {"max_message_kib": 100, "chunk_kib": 98, "batch_kib": 99}  # 98 KiB + 1537 B, 99 KiB + 512 B
    settings = parse_device_config(base, DEVICE_FILE).sync
    assert (settings.chunk_bytes, settings.batch_bytes, settings.max_message_bytes) == (98 * 1024, 99 * 1024,
                                                                                       100 * 1024)
    for key, value in (("chunk_kib", 99), ("batch_kib", 100)):
        bad = copy.deepcopy(base)
        bad["sync"][key] = value
        with pytest.raises(ConfigError, match=f"key 'sync.{key}'"):
            parse_device_config(bad, DEVICE_FILE)


def test_a_fingerprint_is_kept() -> None:
    data = device_base()
    data["device"]["enrolled_fingerprint"] = FINGERPRINT
    assert parse_device_config(data, DEVICE_FILE).enrolled_fingerprint == FINGERPRINT
