"""The SQLite index: stored files and the byte ranges held in staging (sync/station/index_ports.py)."""

from __future__ import annotations

from sync.station.index_sqlite_base import SqliteBase
from sync.station.model import FileRow


class FileRows(SqliteBase):
    def stored_file(self, device: str, name: str) -> FileRow | None:
        row = self._one("SELECT device, name, sha256, size, seq, stored_us FROM files WHERE device=? AND name=?",
                        device, name)
        return None if row is None else FileRow(*row)

    def files_after(self, after: tuple[str, str], limit: int) -> list[FileRow]:
        """Stored files in (device, name) order after ``after`` (("", "") for the first), at most ``limit``."""
        rows = self._db.execute("SELECT device, name, sha256, size, seq, stored_us FROM files WHERE (device, name) > "
                                "(?, ?) ORDER BY device, name LIMIT ?", (*after, limit))
        return [FileRow(*r) for r in rows]

    def add_file(self, row: FileRow) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO files (device, name, sha256, size, seq, stored_us) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (row.device, row.name, row.sha256, row.size, row.seq,
                                                     row.stored_us))
            db.execute("DELETE FROM ranges WHERE device=? AND sha256=?", (row.device, row.sha256))

    def file_totals(self, device: str) -> tuple[int, int]:
        row = self._one("SELECT count(*), coalesce(sum(size), 0) FROM files WHERE device=?", device)
        assert row is not None  # an aggregate always returns a row
        return row[0], row[1]

    def ranges(self, device: str, sha256: str) -> list[tuple[int, int]]:
        rows = self._db.execute("SELECT offset, length FROM ranges WHERE device=? AND sha256=? ORDER BY offset, length",
                                (device, sha256))
        return [(r[0], r[1]) for r in rows]

    def add_range(self, device: str, sha256: str, offset: int, length: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO ranges (device, sha256, offset, length) VALUES (?, ?, ?, ?)",
                         (device, sha256, offset, length))

    def clear_ranges(self, device: str, sha256: str) -> None:
        self._db.execute("DELETE FROM ranges WHERE device=? AND sha256=?", (device, sha256))

    def staged(self, device: str) -> dict[str, int]:
        """Bytes held in staging per file (sha256) of the device: the ranges' lengths, overlaps counted twice."""
        rows = self._db.execute("SELECT sha256, sum(length) FROM ranges WHERE device=? GROUP BY sha256", (device,))
        return {r[0]: r[1] for r in rows}
