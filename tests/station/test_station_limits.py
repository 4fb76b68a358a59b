"""The pure parts of the station's bounds: what to drop from staging, whose failure an error is, the config."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from station_support import station_config

from agent.errors import ConfigError, ProtocolError, StoreError
from agent.evidence.record import MAX_FILE_BYTES
from sync.protocol import ChunkHeader, FileOffer, decode_chunk, encode_chunk
from sync.station.set_aside import is_station_failure
from sync.station.transfer import to_evict


def test_eviction_drops_the_largest_other_files_until_the_new_bytes_fit() -> None:
    staged = {"a": 500, "b": 300, "keep": 100}
    assert to_evict(staged, "keep", 100, 1000) == []
    assert to_evict(staged, "keep", 200, 1000) == ["a"]
    assert to_evict(staged, "keep", 700, 1000) == ["a", "b"]
    # The file being written is never dropped, even when nothing else is left to drop.
    assert to_evict({"keep": 900}, "keep", 200, 1000) == []


@pytest.mark.parametrize("exc, station", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EIO, "Input/output error"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (sqlite3.OperationalError("database or disk is full"), True),
    (StoreError("ledger copy was 10 bytes"), True),
    (OSError(errno.EFBIG, "File too large"), False),  # only a device-chosen offset reaches it
    (ValueError("bad"), False),
    (KeyError("x"), False),
    (OverflowError("too big"), False),
])
def test_whose_failure_an_error_is(exc: BaseException, station: bool) -> None:
    assert is_station_failure(exc) is station


def test_the_protocol_refuses_a_file_past_its_largest() -> None:
    with pytest.raises(ProtocolError, match="more than the protocol's largest file"):
        FileOffer.decode(FileOffer("s", "segments/000001.ts", "ab" * 32, MAX_FILE_BYTES + 1).encode())
    header = ChunkHeader("segments/000001.ts", "ab" * 32, MAX_FILE_BYTES + 1, MAX_FILE_BYTES, 1,
                         "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    with pytest.raises(ProtocolError, match="largest file"):
        decode_chunk(encode_chunk(header, b"\x00"))


def test_staging_allowance_below_the_largest_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_staging_bytes_per_device.*at least limits\.max_file_bytes"):
        station_config(tmp_path / "data", limits={"max_file_bytes": 4 * 1024**2,
                                                  "max_staging_bytes_per_device": 2 * 1024**2})
    with pytest.raises(ConfigError, match=r"limits\.max_file_bytes"):
        station_config(tmp_path / "data", limits={"max_file_bytes": MAX_FILE_BYTES + 1})
