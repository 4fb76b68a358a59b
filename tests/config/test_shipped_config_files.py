"""The files shipped with the project validate: both example configs (which list every key with its
default), every procedure profile; and the framing the config allows for a chunk message is an honest bound
on what sync/protocol.py builds."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from firmware_config import device_config, station_config
from firmware_config.device_config import CHUNK_FRAMING_BYTES, load_device_config, parse_device_config
from firmware_config.profiles import load_profiles, shipped_profiles_dir
from firmware_config.station_config import load_station_config
from sync.protocol import MAX_CHUNK_HEADER_BYTES, PUBLISH_OVERHEAD_BYTES, ChunkHeader, chunk_size_for, encode_chunk

ROOT = Path(__file__).resolve().parents[2]
DEVICE_EXAMPLE = ROOT / "firmware_config" / "device.example.toml"
STATION_EXAMPLE = ROOT / "firmware_config" / "station.example.toml"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"


def every_default(schema: dict[str, dict[str, tuple[Any, Any]]]) -> dict[str, Any]:
    return {f"{table}.{key}": default for table, keys in schema.items() for key, (_, default) in keys.items()}


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_device_example_validates_and_lists_every_key_with_its_default() -> None:
    config = load_device_config(DEVICE_EXAMPLE)
    assert (config.device_id, config.enrolled_fingerprint, config.sync.max_message_bytes) == ("cam-0001", "", 4 << 20)
    # [controls] and any other table read by its own module are checked by their own tests.
    example = flat({t: v for t, v in tomllib.loads(DEVICE_EXAMPLE.read_text(encoding="utf-8")).items()
                    if t in device_config._SCHEMA})
    defaults = every_default(device_config._SCHEMA)
    assert set(example) == set(defaults)
    for key, default in defaults.items():
        if default is not ...:
            assert example[key] == default, key


def test_the_station_example_validates() -> None:
    config = load_station_config(STATION_EXAMPLE)
    assert config.station_id == "station-01" and config.broker.ca is None


@pytest.mark.parametrize(("schema", "table_prefix"), [(device_config._SCHEMA, ""), (station_config._SCHEMA, "")])
def test_the_configuration_doc_names_every_key(schema: dict[str, dict[str, Any]], table_prefix: str) -> None:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    for dotted in every_default(schema):
        assert f"`{table_prefix}{dotted}`" in text, dotted


def test_every_procedure_profile_loads() -> None:
    shipped = sorted(e.name for e in shipped_profiles_dir().iterdir() if e.name.endswith(".toml"))
    procedures = load_profiles()
    assert sorted(f"{name}.toml" for name in procedures) == shipped
    assert all(procedure.stages for procedure in procedures.values())


def test_the_chunk_framing_bound_holds_for_the_largest_header() -> None:
    """The longest file name and the largest numbers still leave the header line within MAX_CHUNK_HEADER_BYTES,
    so CHUNK_FRAMING_BYTES (PUBLISH framing + header + LF) bounds every chunk message's overhead."""
    name = "quarantine/" + "q" * 128  # the longest name STORE_FILE_PATTERN allows
    big = 2**53 - 1
    header = ChunkHeader(name, "f" * 64, big, big, 0, "e" * 64)
    message = encode_chunk(header, b"")
    overhead = len(message)  # the header line and its LF: everything but the chunk's own bytes
    assert overhead <= MAX_CHUNK_HEADER_BYTES + 1
    assert CHUNK_FRAMING_BYTES == PUBLISH_OVERHEAD_BYTES + MAX_CHUNK_HEADER_BYTES + 1


@pytest.mark.parametrize("max_message_kib", [65, 100, 4096])
def test_a_chunk_size_the_config_accepts_is_not_shrunk_by_the_uploader(max_message_kib: int) -> None:
    """The uploader shrinks chunks to the broker's announced maximum packet size; a config that passed the
    check asks for nothing the broker configured with the same limit would make it shrink."""
    largest = (max_message_kib * 1024 - CHUNK_FRAMING_BYTES) // 1024
    data = {"device": {"id": "a", "officer": "b", "store": "/s", "key": "/k"},
            "sync": {"max_message_kib": max_message_kib, "chunk_kib": largest, "batch_kib": min(largest, 4096)}}
    settings = parse_device_config(data, "device.toml").sync
    assert chunk_size_for(settings.chunk_bytes, settings.max_message_bytes) == settings.chunk_bytes
