"""The station's TOML config: defaults, the shipped example, and refusals naming the file and dotted key."""

from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from firmware_config.station_config import (
    BrokerSettings,
    DeadlineSettings,
    OverdueSettings,
    ScrubSettings,
    load_station_config,
    parse_station_config,
    require_broker_tls,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "firmware_config" / "station.example.toml"
MINIMAL = {"station": {"id": "st-1", "data": "/srv/data", "key": "/srv/key"}}


def parse(**tables: dict[str, Any]) -> Any:
    raw: dict[str, Any] = {name: dict(values) for name, values in MINIMAL.items()}
    for name, values in tables.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return parse_station_config(raw, "st.toml")


def refused(match: str, **tables: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(match)}"):
        parse(**tables)


def test_defaults() -> None:
    config = parse()
    assert (config.station_id, config.data, config.key) == ("st-1", Path("/srv/data"), Path("/srv/key"))
    assert config.broker == BrokerSettings()
    assert (config.broker.port, config.broker.client_id, config.broker.session_expiry_seconds,
            config.broker.keepalive_seconds) == (8883, "station", 86400, 30)
    assert (config.max_message_bytes, config.max_pending_records) == (4 * 1024 * 1024, 10_000)
    assert config.deadline == DeadlineSettings(2, frozenset({5, 6}), frozenset(), "UTC")
    assert config.index_path == Path("/srv/data/index.sqlite")
    assert config.scrub == ScrubSettings(86400, 8)


def test_the_example_documents_every_key_with_its_default() -> None:
    config = load_station_config(EXAMPLE)
    assert (config.broker, config.deadline, config.overdue, config.scrub) == (
        BrokerSettings(), DeadlineSettings(), OverdueSettings(), ScrubSettings())
    assert (config.max_message_bytes, config.max_pending_records) == (4 * 1024 * 1024, 10_000)
    from firmware_config.station_config import _SCHEMA

    example = tomllib.loads(EXAMPLE.read_text())
    assert {t: set(v) for t, v in example.items()} == {t: set(v) for t, v in _SCHEMA.items()}
    for table, keys in _SCHEMA.items():
        for key, (_, default) in keys.items():
            if default is not ...:
                assert example[table][key] == default, f"{table}.{key}"


def test_every_value_set() -> None:
    config = parse(
        broker={"host": "mq.local", "port": 1883, "ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem",
                "client_id": "st", "session_expiry_seconds": 600, "keepalive_seconds": 10},
        limits={"max_message_bytes": 1_000_000, "max_pending_records": 5},
        deadline={"working_days": 3, "weekend": ["Friday", "saturday"], "holidays": ["2024-12-25",
                                                                                   datetime.date(2024, 12, 26)],
                  "timezone": "Europe/Amsterdam"},
        overdue={"check_interval_seconds": 5, "device_unseen_working_days": 3, "max_case_open_hours": 48},
        scrub={"interval_seconds": 3600, "slice_mib": 64},
    )
    assert config.overdue == OverdueSettings(5, 3, 48)
    assert config.scrub == ScrubSettings(3600, 64)
    assert require_broker_tls(config) == (Path("/ca.pem"), Path("/c.pem"), Path("/k.pem"))
    assert config.deadline == DeadlineSettings(
        3, frozenset({4, 5}), frozenset({datetime.date(2024, 12, 25), datetime.date(2024, 12, 26)}),
        "Europe/Amsterdam")


@pytest.mark.parametrize(("tables", "message"), [
    ({"stations": {}}, "st.toml: key 'stations': unknown table"),
    ({"broker": {"hots": "x"}}, "st.toml: key 'broker.hots': unknown key"),
    ({"broker": {"port": "8883"}}, 'st.toml: key \'broker.port\': value "8883": expected an integer, not a string'),
    ({"broker": {"port": True}}, "st.toml: key 'broker.port': value true: expected an integer, not a boolean"),
    ({"broker": {"port": 0}}, "st.toml: key 'broker.port': value 0: expected 1..65535"),
    ({"broker": {"session_expiry_seconds": 2**32 - 1}}, "st.toml: key 'broker.session_expiry_seconds': "),
    ({"broker": {"host": " "}}, 'st.toml: key \'broker.host\': value " ": expected non-empty'),
    ({"limits": {"max_message_bytes": 1000}}, "st.toml: key 'limits.max_message_bytes': value 1000: expected 65536.."),
    ({"limits": {"max_pending_records": 0}}, "st.toml: key 'limits.max_pending_records': value 0: expected 1.."),
    ({"limits": [1]}, "st.toml: key 'limits': value [1]: expected a table"),
    ({"deadline": {"working_days": 0}}, "st.toml: key 'deadline.working_days': value 0: expected 1..365"),
    ({"deadline": {"weekend": ["sunday", "funday"]}},
     'st.toml: key \'deadline.weekend[1]\': value "funday": expected a weekday'),
    ({"deadline": {"weekend": "sunday"}}, 'st.toml: key \'deadline.weekend\': value "sunday": expected an array'),
    ({"deadline": {"weekend": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]}},
     "st.toml: key 'deadline.weekend': value ["),
    ({"deadline": {"holidays": ["2024-13-01"]}},
     'st.toml: key \'deadline.holidays[0]\': value "2024-13-01": expected a date'),
    ({"deadline": {"holidays": ["20241225"]}}, "st.toml: key 'deadline.holidays[0]'"),
    ({"deadline": {"holidays": [20241225]}}, "st.toml: key 'deadline.holidays[0]'"),
    ({"deadline": {"timezone": "Mars/Olympus"}},
     'st.toml: key \'deadline.timezone\': value "Mars/Olympus": expected an IANA'),
    ({"deadline": {"timezone": "../etc/passwd"}}, "st.toml: key 'deadline.timezone'"),
    ({"overdue": {"check_interval_seconds": 0}},
     "st.toml: key 'overdue.check_interval_seconds': value 0: expected 1..86400"),
    ({"overdue": {"device_unseen_working_days": 366}},
     "st.toml: key 'overdue.device_unseen_working_days': value 366: expected 1..365"),
    ({"overdue": {"max_case_open_hours": 0}}, "st.toml: key 'overdue.max_case_open_hours': value 0: expected 1..8760"),
    ({"overdue": {"max_case_open_hours": 1.5}}, "st.toml: key 'overdue.max_case_open_hours': value 1.5: expected an "
     "integer"),
    ({"overdue": {"unseen_days": 3}}, "st.toml: key 'overdue.unseen_days': unknown key"),
    ({"station": {"id": "has space"}}, 'st.toml: key \'station.id\': value "has space": expected a name'),
    ({"broker": {"ca": "/ca.pem"}},
     "st.toml: key 'broker.cert': value \"\": expected a file path: broker.ca, broker.cert "
     "and broker.key are set together, and broker.ca is set"),
    ({"broker": {"cert": "/c.pem", "key": "/k.pem"}}, "st.toml: key 'broker.ca': value \"\": expected a file path"),
    ({"station": {"data": ""}}, 'st.toml: key \'station.data\': value "": expected non-empty'),
    ({"scrub": {"interval_seconds": 0}}, "st.toml: key 'scrub.interval_seconds': value 0: expected 1..31622400"),
    ({"scrub": {"slice_mib": 2048}}, "st.toml: key 'scrub.slice_mib': value 2048: expected 1..1024"),
    ({"scrub": {"interval": 60}}, "st.toml: key 'scrub.interval': unknown key"),
    ({"scrub": {"interval_seconds": 1.5}}, "st.toml: key 'scrub.interval_seconds': value 1.5: expected an integer"),
])
def test_refusals_name_the_file_and_key(tables: dict[str, dict[str, Any]], message: str) -> None:
    refused(message, **tables)


def test_required_keys() -> None:
    with pytest.raises(ConfigError, match=r"^st\.toml: key 'station\.key': missing: expected a string$"):
        parse_station_config({"station": {"id": "a", "data": "/d"}}, "st.toml")


def test_serve_needs_the_tls_files() -> None:
    with pytest.raises(ConfigError, match=r"^st\.toml: key 'broker\.ca': value \"\": expected a file path: required "
                                          r"to serve"):
        require_broker_tls(parse())


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_station_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[station\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_station_config(bad)
