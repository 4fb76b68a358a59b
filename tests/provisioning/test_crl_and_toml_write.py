"""The CA's revocation list (sync/broker.py) and the TOML writer apply uses (firmware_config/toml_write.py)."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from agent.errors import ConfigError, KeyFileError
from firmware_config.toml_write import dumps
from sync.broker import write_broker_setup
from sync.broker_certs import create_ca, crl_pem, crl_serials
from sync.station.certificates import StationCA

EXAMPLE = Path(__file__).resolve().parents[2] / "firmware_config" / "device.example.toml"


def test_revoking_adds_serials_keeps_earlier_dates_and_never_removes(tmp_path: Path) -> None:
    files = write_broker_setup(tmp_path / "broker", port=18883, devices=[])
    ca = StationCA.load(files.folder)
    assert ca.revoked() == {}
    assert ca.revoke({11, 12}) == {11, 12}
    first = ca.revoked()
    assert ca.revoke({12, 13}) == {13}
    assert ca.revoke({13}) == set()
    second = ca.revoked()
    assert set(second) == {11, 12, 13} and second[11] == first[11]
    assert files.crl is not None
    crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3000)


def test_the_station_ca_is_refused_when_missing_or_its_key_is_not_its_own(tmp_path: Path) -> None:
    files = write_broker_setup(tmp_path / "broker", port=18883, devices=[])
    files.ca_key.chmod(0o600)
    files.ca_key.write_bytes(create_ca("other CA")[1])
    with pytest.raises(KeyFileError, match="does not belong"):
        StationCA.load(files.folder)
    files.ca_key.unlink()
    with pytest.raises(KeyFileError, match=r"station CA .*ca\.key: missing"):
        StationCA.load(files.folder)


def test_a_revocation_list_not_signed_by_the_station_ca_is_refused(tmp_path: Path) -> None:
    files = write_broker_setup(tmp_path / "broker", port=18883, devices=[])
    assert files.crl is not None
    files.crl.write_bytes(crl_pem(*create_ca("other CA"), revoked={}))
    with pytest.raises(KeyFileError, match="not signed by this station's CA"):
        crl_serials(files.crl, files.ca_cert.read_bytes())
    with pytest.raises(KeyFileError, match=r"crl\.pem: not signed"):
        write_broker_setup(tmp_path / "broker", port=18883, devices=[])


def test_toml_writer_round_trips_the_device_example_and_escapes_strings() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert tomllib.loads(dumps(data, "a header")) == data
    tricky = {"device": {"id": "x", "officer": 'quote " back\\slash \t tab \x7f del é 😀', "a.b": 1.5}}
    text = dumps(tricky)
    assert tomllib.loads(text) == tricky and '"a.b" = 1.5' in text


@pytest.mark.parametrize("value", [float("nan"), datetime.date(2024, 1, 1), {1, 2}])
def test_toml_writer_refuses_what_it_cannot_write_faithfully(value: object) -> None:
    with pytest.raises(ConfigError, match=r"key 'sync\.x'"):
        dumps({"sync": {"x": value}})
