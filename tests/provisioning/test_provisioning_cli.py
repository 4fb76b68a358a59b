"""The provisioning commands in-process: both inits are idempotent, and every refused input changes nothing."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from firmware_config.device_config import load_device_config
from firmware_config.provision_cli import main as provision
from firmware_config.station_config import load_station_config
from sync.station.cli import main as station
from sync.station.index import SqliteIndex


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under the folders and its SHA-256: what a refused command must leave as it was."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def station_state(root: Path) -> tuple[dict[str, str], list[object]]:
    """The station's files (not the SQLite file, whose bytes change when opened) and its enrolled devices."""
    index = SqliteIndex(root / "station" / "data" / "index.sqlite")
    try:
        devices: list[object] = list(index.devices())
    finally:
        index.close()
    return snapshot(root / "station" / "broker"), devices


def station_init(root: Path, *extra: str) -> int:
    return station(["init", "--dir", str(root / "station"), "--port", "18883", *extra])


def device_init(root: Path, device: str = "cam-1", folder: str = "device", *extra: str) -> int:
    return provision(["init", "--dir", str(root / folder), "--device-id", device, "--hardware", "synthetic",
                      "--store", str(root / folder / "store"), *extra])


def enroll(root: Path, device: str = "cam-1", folder: str = "device", *extra: str) -> int:
    return station(["enroll", "--config", str(root / "station" / "station.toml"),
                    str(root / folder / f"{device}.request.json"), "--out", str(root / f"{device}.bundle.json"),
                    *extra])


def test_station_init_twice_changes_nothing_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert station_init(tmp_path, "--station-id", "st-1") == 0
    first = snapshot(tmp_path)
    capsys.readouterr()

    assert station_init(tmp_path) == 0

    assert "already initialised; nothing changed" in capsys.readouterr().out
    assert snapshot(tmp_path) == first
    folder = tmp_path / "station"
    for key in ("ack.key", "broker/ca.key", "broker/server.key", "broker/station.key"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    config = load_station_config(folder / "station.toml")
    assert (config.station_id, config.broker.port, config.broker.ca) == ("st-1", 18883, folder / "broker/ca.crt")
    conf = (folder / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in ("require_certificate true", "use_identity_as_username true", f"crlfile {folder}/broker/crl.pem",
                 f"acl_file {folder}/broker/acl"):
        assert line in conf


@pytest.mark.parametrize("extra", [["--station-id", "other"], ["--port", "18884"]])
def test_station_init_refuses_to_contradict_an_existing_station_toml(
        tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert station_init(tmp_path) == 0
    before = snapshot(tmp_path)
    assert station(["init", "--dir", str(tmp_path / "station"), *extra]) == 2
    assert "station.toml: key" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_station_init_writes_any_printable_path_and_refuses_the_rest_before_making_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Outside the Basic Multilingual Plane: a JSON-style surrogate-pair escape would not be valid TOML.
    folder = tmp_path / "st\N{GRINNING FACE}\N{LATIN SMALL LETTER E WITH ACUTE}"
    assert station(["init", "--dir", str(folder), "--port", "18883"]) == 0
    config = load_station_config(folder / "station.toml")
    assert (config.data, config.key) == (folder / "data", folder / "ack.key")
    capsys.readouterr()
    unprintable = tmp_path / "st\x01"
    assert station(["init", "--dir", str(unprintable), "--port", "18883"]) == 2
    assert "key 'station.data'" in capsys.readouterr().err
    assert not unprintable.exists()


def test_device_init_twice_changes_nothing_and_refuses_another_identity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert device_init(tmp_path) == 0
    first = snapshot(tmp_path)
    capsys.readouterr()

    assert device_init(tmp_path) == 0
    assert "already initialised; nothing changed" in capsys.readouterr().out
    assert device_init(tmp_path, "cam-2") == 2
    assert "key 'device.id': this device is 'cam-1', not 'cam-2'" in capsys.readouterr().err

    assert snapshot(tmp_path) == first
    folder = tmp_path / "device"
    for key in ("device.key", "mqtt.key"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    config = load_device_config(folder / "device.toml")
    assert (config.device_id, config.camera_backend, config.key) == ("cam-1", "synthetic", folder / "device.key")
    assert config.sync.broker_host == ""  # nothing to sync with until the bundle is applied
    request = json.loads((folder / "cam-1.request.json").read_text())
    assert "PRIVATE" not in json.dumps(request)


def test_device_init_with_an_unknown_hardware_profile_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision(["init", "--dir", str(tmp_path / "d"), "--device-id", "cam-1", "--hardware", "pi9",
                      "--store", str(tmp_path / "s")]) == 2
    assert "--hardware 'pi9': no such profile" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.fixture
def enrolled(tmp_path: Path) -> Path:
    """A station and two devices initialised; cam-1 enrolled and its bundle at tmp_path/cam-1.bundle.json."""
    assert station_init(tmp_path) == 0
    assert device_init(tmp_path) == 0
    assert device_init(tmp_path, "cam-2", "device2") == 0
    assert enroll(tmp_path) == 0
    return tmp_path


def test_apply_twice_changes_nothing_the_second_time(enrolled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(enrolled / "cam-1.bundle.json")
    assert provision(["apply", "--dir", str(enrolled / "device"), bundle]) == 0
    first = snapshot(enrolled / "device")
    capsys.readouterr()
    assert provision(["apply", "--dir", str(enrolled / "device"), bundle]) == 0
    assert "already applied; nothing changed" in capsys.readouterr().out
    assert snapshot(enrolled / "device") == first
    config = load_device_config(enrolled / "device" / "device.toml")
    assert config.sync.cert == enrolled / "device" / "mqtt.crt" and config.sync.broker_port == 18883


def _edited(bundle: Path, **fields: object) -> Path:
    data = json.loads(bundle.read_text())
    data.update(fields)
    bundle.write_text(json.dumps(data))
    return bundle


@pytest.mark.parametrize(("make", "why"), [
    ("other-device", "field 'device_id': 'cam-2' is not this device ('cam-1')"),
    ("edited", "field 'signature': does not verify"),
    ("not-json", "not JSON"),
])
def test_apply_refuses_a_bad_bundle_and_changes_nothing(
        enrolled: Path, make: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = enrolled / "cam-1.bundle.json"
    if make == "other-device":
        assert enroll(enrolled, "cam-2", "device2") == 0
        bundle = enrolled / "cam-2.bundle.json"
    elif make == "edited":
        _edited(bundle, broker_host="evil.example")
    else:
        bundle.write_text("{")
    before = snapshot(enrolled / "device")
    capsys.readouterr()
    assert provision(["apply", "--dir", str(enrolled / "device"), str(bundle)]) == 2
    err = capsys.readouterr().err
    assert f"enrolment bundle {bundle}" in err and why in err
    assert snapshot(enrolled / "device") == before


def test_enroll_refuses_a_new_key_without_replace_and_a_tampered_request(
        enrolled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # cam-2's folder re-initialised as cam-1 would be a new key for an enrolled id.
    assert device_init(enrolled, "cam-1", "impostor") == 0
    before = station_state(enrolled)
    capsys.readouterr()
    assert enroll(enrolled, "cam-1", "impostor") == 2
    assert "already enrolled with key" in capsys.readouterr().err
    request = enrolled / "device2" / "cam-2.request.json"
    _edited(request, fingerprint="0" * 64)
    assert enroll(enrolled, "cam-2", "device2") == 2
    assert "field 'fingerprint': is not the SHA-256 of public_key" in capsys.readouterr().err
    assert station_state(enrolled) == before


def test_revoke_then_reenrol_needs_replace_and_issues_a_new_certificate(
        enrolled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(enrolled / "station" / "station.toml")
    issued = enrolled / "station" / "broker" / "issued" / "cam-1"
    assert enroll(enrolled) == 0  # the same request again reuses the certificate
    assert len(list(issued.iterdir())) == 1
    assert station(["revoke", "--config", config, "--device", "cam-1"]) == 0
    assert "reload the broker" in capsys.readouterr().out
    assert station(["revoke", "--config", config, "--device", "cam-1"]) == 0
    assert "already revoked; nothing changed" in capsys.readouterr().out
    assert station(["revoke", "--config", config, "--device", "cam-9"]) == 2
    index = SqliteIndex(enrolled / "station" / "data" / "index.sqlite")
    try:
        row = index.device("cam-1")
        assert row is not None and row.revoked
    finally:
        index.close()

    before = station_state(enrolled)
    assert enroll(enrolled) == 2
    assert "revoked at this station; pass --replace" in capsys.readouterr().err
    assert station_state(enrolled) == before
    assert enroll(enrolled, "cam-1", "device", "--replace") == 0
    assert len(list(issued.iterdir())) == 2


@pytest.mark.parametrize("reserved", ["station", "station-tools", "bodycam-station"])
def test_the_stations_identity_names_are_never_a_device_id(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], reserved: str) -> None:
    """Each is a certificate name, and so a client id, on the station's broker (issue 12, fault 3)."""
    assert station_init(tmp_path) == 0
    assert device_init(tmp_path, reserved) == 2
    assert "reserved for the station" in capsys.readouterr().err
    assert not (tmp_path / "device").exists()
    pub = tmp_path / "some.pub"
    assert station(["show-key", "--config", str(tmp_path / "station" / "station.toml")]) == 0
    pub.write_text(capsys.readouterr().out)
    assert station(["add-device", "--config", str(tmp_path / "station" / "station.toml"), "--device", reserved,
                    "--pubkey", str(pub)]) == 2
    assert f"device {reserved}: reserved for the station's own identities" in capsys.readouterr().err


def test_enroll_refuses_the_receivers_configured_client_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert station_init(tmp_path) == 0
    toml = tmp_path / "station" / "station.toml"
    toml.write_text(toml.read_text().replace("[broker]\n", '[broker]\nclient_id = "rx-1"\n'))
    assert device_init(tmp_path, "rx-1") == 0
    before = station_state(tmp_path)
    capsys.readouterr()
    assert enroll(tmp_path, "rx-1") == 2
    assert "device rx-1: the receiver's client id" in capsys.readouterr().err
    assert station_state(tmp_path) == before and not (tmp_path / "rx-1.bundle.json").exists()


def test_init_again_upgrades_a_station_made_before_client_ids_were_fixed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented upgrade (docs/provisioning.md): a bare second init adds the tools' certificate and
    rewrites the ACL and mosquitto.conf, says the broker needs a restart, and keeps every key."""
    assert station_init(tmp_path) == 0
    broker = tmp_path / "station" / "broker"
    for name in ("station-tools.crt", "station-tools.key"):
        (broker / name).unlink()
    conf, acl = broker / "mosquitto.conf", broker / "acl"
    conf.write_text(conf.read_text().replace("use_username_as_clientid true\n", ""))
    acl.write_text(acl.read_text().replace("user station-tools\ntopic write bodycam/+/down/assignment\n", ""))
    keys = {p: p.read_bytes() for p in broker.glob("*.key")}
    capsys.readouterr()

    assert station(["init", "--dir", str(tmp_path / "station")]) == 0

    out = capsys.readouterr().out
    for line in (f"created {broker / 'station-tools.crt'}", f"created {broker / 'station-tools.key'}",
                 f"updated {acl}", f"updated {conf}", "restart the broker (systemctl restart bodycam-broker)"):
        assert line in out, out
    assert "use_username_as_clientid true" in conf.read_text() and "user station-tools" in acl.read_text()
    assert {p: p.read_bytes() for p in keys} == keys
    assert stat.S_IMODE((broker / "station-tools.key").stat().st_mode) == 0o600
    assert station(["init", "--dir", str(tmp_path / "station")]) == 0
    assert "already initialised; nothing changed" in capsys.readouterr().out
