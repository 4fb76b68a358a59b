"""The station's index: enrolled devices, sync sessions, stored records, file claims and files, staged byte
ranges, cases, problems, health reports and the officer assignments the station published.

The ports, one per concern, are in sync/station/index_ports.py (:class:`Index` is all of them);
:class:`SqliteIndex` implements them with sqlite3 (WAL, ``synchronous=FULL``, one connection used from one
thread), one mixin per concern (sync/station/index_sqlite_*.py), its schema migrated at open
(sync/station/index_schema.py). The evidence itself is in the evidence store: the index says what is there
and where, and is written only after the evidence is durable, so after a crash it may lag the store but
never run ahead of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync.station.index_ports import Index
from sync.station.index_schema import SCHEMA_VERSION
from sync.station.index_sqlite_chain import SESSION_COUNTERS, CaseRows, ChainRows, DeviceRows, SessionRows
from sync.station.index_sqlite_files import FileRows
from sync.station.index_sqlite_problems import AssignmentRows, HealthRows, ProblemRows

__all__ = ["SCHEMA_VERSION", "SESSION_COUNTERS", "Index", "SqliteIndex", "open_index", "technician_index"]


class SqliteIndex(DeviceRows, SessionRows, ChainRows, CaseRows, FileRows, ProblemRows, HealthRows, AssignmentRows):
    """The index in one SQLite file. Not thread-safe by design: one connection, used by one thread."""


def open_index(path: Path) -> Index:
    """The station's index (the SQLite backend; issue 19 adds PostgreSQL's), migrated to the current schema."""
    return SqliteIndex(path)


@contextmanager
def technician_index(path: Path) -> Iterator[SqliteIndex]:
    """The index as a technician's command opens it (add-device, enroll, revoke, assign; often under sudo).

    On the way out, index files root created (the database, its WAL and shared memory) are handed to the owner
    of the data folder: otherwise the receiver, running as its own user, could no longer write its index.
    """
    index = SqliteIndex(path)
    try:
        yield index
    finally:
        index.close()
        _give_to_folder_owner(path)


def _give_to_folder_owner(path: Path) -> None:
    if os.geteuid() != 0 or not path.parent.exists():
        return
    owner = path.parent.stat()
    if owner.st_uid == 0:
        return
    for item in path.parent.glob(f"{path.name}*"):
        if item.stat().st_uid != owner.st_uid:
            os.chown(item, owner.st_uid, owner.st_gid)
