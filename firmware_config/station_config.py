"""The station receiver's configuration file (TOML): typed, every key documented, unknown keys refused.

Every problem raises ConfigError naming the file, the dotted key and what is wrong; nothing starts on a bad
file. An example with every key and its default is ``firmware_config/station.example.toml``.

    [station]     id (named in every acknowledgement), data (evidence store, index, staging), key
    [broker]      the station's Mosquitto: host, port, TLS files, client id, session expiry, keepalive
    [limits]      what one device may make the station hold: message, file, staging, pending records, and
                  the free space kept for the station itself
    [deadline]    the upload deadline (art. 17): working_days, weekend, holidays, timezone
    [overdue]     the station's own check: check_interval_seconds, device_unseen_working_days, max_case_open_hours
    [scrub]       the re-check of stored evidence in serve: interval_seconds, slice_mib

Settings that must agree are checked together: the broker's TLS files are given all three or none. Every
refusal reads ``FILE: key 'dotted.key': value VALUE: expected ...`` (firmware_config.toml_file.refusal).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.evidence.encoding import MAX_LINE_BYTES
from agent.evidence.fsutil import display_path
from agent.evidence.record import DEVICE_ID_PATTERN, MAX_FILE_BYTES
from firmware_config.toml_file import FILE_PATH, PRINTABLE, Schema, Text, read_toml, refusal, typed_tables

MIB = 1024 * 1024
GIB = 1024 * MIB
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_SCHEMA: Schema = {
    "station": {"id": (str, ...), "data": (str, ...), "key": (str, ...)},
    "broker": {
        "host": (str, "localhost"),
        "port": (int, 8883),
        "ca": (str, ""),
        "cert": (str, ""),
        "key": (str, ""),
        "client_id": (str, "station"),
        "session_expiry_seconds": (int, 86400),
        "keepalive_seconds": (int, 30),
    },
    "limits": {
        "max_message_bytes": (int, 4 * MIB),
        "max_pending_records": (int, 10_000),
        "max_pending_bytes": (int, 64 * MIB),
        "max_file_bytes": (int, 8 * GIB),
        "max_staging_bytes_per_device": (int, 16 * GIB),
        "min_free_bytes": (int, GIB),
    },
    "deadline": {
        "working_days": (int, 2),
        "weekend": (list, ["saturday", "sunday"]),
        "holidays": (list, []),
        "timezone": (str, "UTC"),
    },
    "overdue": {
        "check_interval_seconds": (int, 300),
        "device_unseen_working_days": (int, 5),
        "max_case_open_hours": (int, 12),
    },
    "scrub": {"interval_seconds": (int, 86400), "slice_mib": (int, 8)},
}
_RANGES: dict[str, tuple[float, float]] = {
    "broker.port": (1, 65535),
    # MQTT 5 carries the expiry in four bytes; 0xFFFFFFFF would mean "never expires", which is not wanted.
    "broker.session_expiry_seconds": (60, 2**32 - 2),
    "broker.keepalive_seconds": (5, 65535),
    # A records message must hold at least one complete ledger line (the longest the ledger allows); MQTT caps
    # a packet at 256 MiB - 1.
    "limits.max_message_bytes": (MAX_LINE_BYTES, 256 * MIB - 1),
    "limits.max_pending_records": (1, 10_000_000),
    "limits.max_pending_bytes": (MAX_LINE_BYTES, 64 * GIB),
    "limits.max_file_bytes": (MIB, MAX_FILE_BYTES),
    "limits.max_staging_bytes_per_device": (MIB, 2**50),
    "limits.min_free_bytes": (0, 2**50),
    "deadline.working_days": (1, 365),
    "overdue.check_interval_seconds": (1, 86400),
    "overdue.device_unseen_working_days": (1, 365),
    "overdue.max_case_open_hours": (1, 8760),
    "scrub.interval_seconds": (1, 366 * 86400),
    "scrub.slice_mib": (1, 1024),
}


@dataclass(frozen=True)
class BrokerSettings:
    """The receiver's MQTT connection. ``ca``/``cert``/``key``: PEM files of the station CA and the
    receiver's client certificate (CN "station") and key; empty until ``serve`` needs them."""

    host: str = "localhost"
    port: int = 8883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    client_id: str = "station"
    session_expiry_seconds: int = 86400
    keepalive_seconds: int = 30


@dataclass(frozen=True)
class DeadlineSettings:
    """The upload deadline: ``working_days`` after the recording's local date, skipping ``weekend`` days
    (``datetime.date.weekday()`` numbers, Monday 0) and ``holidays``, in the IANA ``timezone``."""

    working_days: int = 2
    weekend: frozenset[int] = frozenset({5, 6})
    holidays: frozenset[datetime.date] = frozenset()
    timezone: str = "UTC"


@dataclass(frozen=True)
class OverdueSettings:
    """The station's check for what has not arrived (art. 17) and for cases left open or closed incomplete:
    run by ``serve`` every ``check_interval_seconds`` and by every ``status`` and ``problems``."""

    check_interval_seconds: int = 300
    device_unseen_working_days: int = 5  # working days (the [deadline] calendar) without a sync session
    max_case_open_hours: int = 12


@dataclass(frozen=True)
class ScrubSettings:
    """``serve`` re-checks every stored object and ledger copy every ``interval_seconds`` (the first pass at
    start-up), hashing at most ``slice_mib`` between two batches of messages (sync/station/scrub.py)."""

    interval_seconds: int = 86400
    slice_mib: int = 8


@dataclass(frozen=True)
class StationConfig:
    source: str
    station_id: str
    data: Path
    key: Path
    broker: BrokerSettings
    max_message_bytes: int
    max_pending_records: int
    deadline: DeadlineSettings
    max_pending_bytes: int = 64 * MIB
    max_file_bytes: int = 8 * GIB
    max_staging_bytes_per_device: int = 16 * GIB
    min_free_bytes: int = GIB
    overdue: OverdueSettings = OverdueSettings()
    scrub: ScrubSettings = ScrubSettings()

    @property
    def index_path(self) -> Path:
        return self.data / "index.sqlite"

_TEXTS: dict[str, Text] = {
    # The id rides in every acknowledgement (at most 64 characters there); keep it to a plain name.
    "station.id": Text("a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}", pattern=DEVICE_ID_PATTERN),
    # An empty path would be the working directory; an empty host or client id cannot connect.
    "station.data": PRINTABLE, "station.key": PRINTABLE, "broker.host": PRINTABLE, "broker.client_id": PRINTABLE,
    **{f"broker.{name}": FILE_PATH for name in ("ca", "cert", "key")},
}


def load_station_config(path: Path) -> StationConfig:
    source = display_path(path)
    return parse_station_config(read_toml(path, source), source)


def parse_station_config(data: dict[str, Any], source: str) -> StationConfig:
    values = typed_tables(data, _SCHEMA, _RANGES, source, texts=_TEXTS)
    station, broker, limits = values["station"], values["broker"], values["limits"]
    tls = {name: Path(broker[name]) if broker[name] else None for name in ("ca", "cert", "key")}
    given = [name for name, path in tls.items() if path is not None]
    if given and len(given) < len(tls):
        # A half-configured TLS client would only fail later, at serve; the three files belong together.
        missing = next(name for name, path in tls.items() if path is None)
        raise refusal(source, f"broker.{missing}", "", f"a file path: broker.ca, broker.cert and broker.key are "
                      f"set together, and broker.{given[0]} is set")
    if limits["max_staging_bytes_per_device"] < limits["max_file_bytes"]:
        # A device must be able to stage the largest file it may send, or that file could never complete.
        raise refusal(source, "limits.max_staging_bytes_per_device", limits["max_staging_bytes_per_device"],
                      f"at least limits.max_file_bytes ({limits['max_file_bytes']})")
    return StationConfig(
        source=source,
        station_id=station["id"],
        data=Path(station["data"]),
        key=Path(station["key"]),
        broker=BrokerSettings(
            host=broker["host"], port=broker["port"], ca=tls["ca"], cert=tls["cert"], key=tls["key"],
            client_id=broker["client_id"], session_expiry_seconds=broker["session_expiry_seconds"],
            keepalive_seconds=broker["keepalive_seconds"],
        ),
        max_message_bytes=limits["max_message_bytes"],
        max_pending_records=limits["max_pending_records"],
        max_pending_bytes=limits["max_pending_bytes"],
        max_file_bytes=limits["max_file_bytes"],
        max_staging_bytes_per_device=limits["max_staging_bytes_per_device"],
        min_free_bytes=limits["min_free_bytes"],
        deadline=_deadline(values["deadline"], source),
        overdue=OverdueSettings(**values["overdue"]),
        scrub=ScrubSettings(values["scrub"]["interval_seconds"], values["scrub"]["slice_mib"]),
    )


def require_broker_tls(config: StationConfig) -> tuple[Path, Path, Path]:
    """The CA, certificate and key files ``serve`` needs; ConfigError naming the first one not set."""
    broker = config.broker
    for name, path in (("ca", broker.ca), ("cert", broker.cert), ("key", broker.key)):
        if path is None:
            raise refusal(config.source, f"broker.{name}", "", "a file path: required to serve (the broker speaks "
                          "TLS only)")
    assert broker.ca is not None and broker.cert is not None and broker.key is not None  # checked above
    return broker.ca, broker.cert, broker.key


def _deadline(table: dict[str, Any], source: str) -> DeadlineSettings:
    weekend: set[int] = set()
    for index, name in enumerate(table["weekend"]):
        if not isinstance(name, str) or name.lower() not in WEEKDAYS:
            raise refusal(source, f"deadline.weekend[{index}]", name, f"a weekday name ({', '.join(WEEKDAYS)})")
        weekend.add(WEEKDAYS.index(name.lower()))
    if len(weekend) == len(WEEKDAYS):
        raise refusal(source, "deadline.weekend", table["weekend"], "at most six days: with every day a weekend "
                      "day no deadline can be met")
    holidays: set[datetime.date] = set()
    for index, item in enumerate(table["holidays"]):
        holidays.add(_holiday(item, source, f"deadline.holidays[{index}]"))
    name = table["timezone"]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise refusal(source, "deadline.timezone", name, "an IANA time zone name (e.g. \"Europe/Amsterdam\")") from None
    return DeadlineSettings(table["working_days"], frozenset(weekend), frozenset(holidays), name)


def _holiday(item: object, source: str, key: str) -> datetime.date:
    # A TOML local date (2024-12-25 without quotes) is accepted as well as the string "2024-12-25".
    if isinstance(item, datetime.date) and not isinstance(item, datetime.datetime):
        return item
    wrong = refusal(source, key, item, 'a date "YYYY-MM-DD" (or a TOML date)')
    # fromisoformat also takes "20241225" and week dates: the length pins the one documented spelling.
    if not isinstance(item, str) or len(item) != 10:
        raise wrong
    try:
        return datetime.date.fromisoformat(item)
    except ValueError:
        raise wrong from None
