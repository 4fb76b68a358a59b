"""The SQLite index's connection: opening (and migrating) the file, transactions, one-row queries.

The concerns of the index (sync/station/index_ports.py) are mixins over this base, each in its own module;
:class:`sync.station.index.SqliteIndex` puts them together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.evidence.fsutil import display_path
from sync.station.index_schema import migrate


class SqliteBase:
    """One connection, used by one thread (not thread-safe by design)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        name = display_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: multi-statement writes take an explicit BEGIN IMMEDIATE (see _write).
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"index {name}: cannot open ({exc})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transaction survives a power cut, which the acknowledgements rely on.
            self._db.execute("PRAGMA synchronous=FULL")
            self.migrated = migrate(self._db, name)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"index {name}: not a usable station index ({exc})") from None
        except StoreError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: the calls inside share one transaction, so one fsync makes them all durable."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything in it is durable together, or none of it is. Inside a batch it is a
        savepoint, so a failed write still leaves nothing behind while the batch goes on."""
        if self._db.in_transaction:
            self._db.execute("SAVEPOINT write")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO write")
                self._db.execute("RELEASE write")
                raise
            self._db.execute("RELEASE write")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
        return row
