"""``bodycam-station assign`` against a real Mosquitto: what it publishes (retained, signed, checkable), and
what it refuses without publishing anything."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from broker_fixture import connect
from helpers import seeded_key
from sync_world import SyncWorld

from agent.evidence.assignment import parse_assignment, verify_assignment
from firmware_config.station_config import load_station_config
from firmware_config.toml_write import dumps
from sync.broker import free_port
from sync.protocol import down_topic
from sync.station.cli import main as station_main
from sync.station.index import SqliteIndex
from sync.station.model import AssignmentRow

DEVICE_KEY = seeded_key(1)


def retained(world: SyncWorld, device: str) -> list[tuple[bytes, bool]]:
    client = connect(world.broker, device, client_id=f"look-{device}")
    try:
        client.subscribe_wait(down_topic(device, "assignment"))
        got = []
        while (message := client.next_message(timeout=0.3)) is not None:
            got.append((message.payload, message.retain))
        return got
    finally:
        client.close()


def latest_assignments(index_path: Path) -> dict[str, AssignmentRow]:
    index = SqliteIndex(index_path)
    try:
        return index.latest_assignments()
    finally:
        index.close()


def test_assign_publishes_a_retained_signed_assignment_and_records_it(world: SyncWorld) -> None:
    world.enroll("cam-0001", DEVICE_KEY)
    result = world.station_cli("assign", "--device", "cam-0001", "--officer", "B5678")
    assert "serial" in result.stdout
    [(payload, retain)] = retained(world, "cam-0001")
    assert retain is True
    signed = parse_assignment(payload)
    verify_assignment(signed, world.station_key.public_key, "cam-0001")
    assert signed.assignment.officer == "B5678" and signed.assignment.station == "station-t"
    # The station index keeps it; a second assignment replaces the retained one at the broker.
    world.station_cli("assign", "--device", "cam-0001", "--officer", "C0002")
    [(payload, _)] = retained(world, "cam-0001")
    assert parse_assignment(payload).assignment.officer == "C0002"
    latest = latest_assignments(world.data / "index.sqlite")
    assert latest["cam-0001"].officer == "C0002"
    assert len(world.query("SELECT serial FROM assignments WHERE device = 'cam-0001'")) == 2
    # status shows the officer this station assigned last, in text and JSON
    text = world.station_cli("status", check=False).stdout
    assert "officer assigned: C0002 (by this station at" in text
    [device] = json.loads(world.station_cli("status", "--json", check=False).stdout)["devices"]
    assert device["assigned_officer"]["officer"] == "C0002"


def test_unknown_revoked_and_unreachable_are_refused_with_nothing_published(
    world: SyncWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for device in ("cam-0002", "cam-0003"):
        world.enroll(device, DEVICE_KEY)
    index = SqliteIndex(world.data / "index.sqlite")
    try:
        row = index.device("cam-0002")
        assert row is not None
        index.put_device(replace(row, revoked=True))
    finally:
        index.close()

    def assign(config: Path, device: str, officer: str) -> tuple[int, str]:
        code = station_main(["assign", "--config", str(config), "--device", device, "--officer", officer])
        return code, capsys.readouterr().err

    for device, officer, why in (("cam-0404", "B1", "not enrolled"), ("cam-0002", "B1", "revoked"),
                                 ("cam-0003", "", "officer id"), ("cam-0003", "x" * 65, "officer id"),
                                 ("cam-0003", "B\n1", "officer id")):
        code, err = assign(world.config, device, officer)
        assert code == 2 and why in err, err
    # The broker away: refused, and not recorded as published.
    config = load_station_config(world.config)
    away = tmp_path / "away.toml"
    away.write_text(dumps({
        "station": {"id": "station-t", "data": str(world.data), "key": str(world.station_key_path)},
        "broker": {"host": "127.0.0.1", "port": free_port(), "ca": str(config.broker.ca),
                   "cert": str(config.broker.cert), "key": str(config.broker.key)},
    }))
    code, err = assign(away, "cam-0003", "C2")
    assert code == 2 and "cannot connect" in err, err
    # A station folder without the tools' certificate (set up before it existed): refused, saying how to make it.
    bare = tmp_path / "bare-broker"
    bare.mkdir()
    shutil.copy(config.broker.ca, bare / "ca.crt")
    old = tmp_path / "old.toml"
    old.write_text(dumps({
        "station": {"id": "station-t", "data": str(world.data), "key": str(world.station_key_path)},
        "broker": {"host": "127.0.0.1", "port": world.broker.port, "ca": str(bare / "ca.crt"),
                   "cert": str(config.broker.cert), "key": str(config.broker.key)},
    }))
    code, err = assign(old, "cam-0003", "C3")
    assert code == 2 and "station-tools.crt: missing; run bodycam-station init" in err, err
    # A tools certificate the ACL does not let write the device's down topics (a device's): the broker refuses it.
    _ca, cert, key = world.broker.client_tls("cam-0009")
    shutil.copy(cert, bare / "station-tools.crt")
    shutil.copy(key, bare / "station-tools.key")
    code, err = assign(old, "cam-0003", "C3")
    assert code == 2 and "Not authorized" in err and "not taken" in err, err
    assert latest_assignments(world.data / "index.sqlite") == {}
    for device in ("cam-0404", "cam-0002", "cam-0003"):
        assert retained(world, device) == []
