"""The SQLite index: problems (deduplicated, resolved), device health reports and the officer assignments
the station published (sync/station/index_ports.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sync.station.index_sqlite_base import SqliteBase
from sync.station.model import DEVICE_FAULT, GAP, AssignmentRow, HealthRow, ProblemRow


class ProblemRows(SqliteBase):
    def add_problem(self, device: str | None, seq: int | None, obj: str | None, kind: str, reason: str,
                    topic: str | None, at_us: int) -> bool:
        """Record a problem; the same one again (device, kind, seq, object, reason) only counts a repeat.
        Returns True when it is new."""
        with self._write() as db:
            found = db.execute(
                "SELECT id FROM problems WHERE device IS ? AND kind=? AND seq IS ? AND object IS ? AND reason=?",
                (device, kind, seq, obj, reason)).fetchone()
            if found is not None:
                db.execute("UPDATE problems SET repeats=repeats+1, last_us=? WHERE id=?", (at_us, found[0]))
                return False
            db.execute("INSERT INTO problems (device, seq, object, kind, reason, topic, at_us, last_us) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (device, seq, obj, kind, reason, topic, at_us, at_us))
            return True

    def resolve_gaps(self, device: str, upto_seq: int, at_us: int) -> int:
        """Mark the gaps whose first missing record is now stored as resolved; returns how many."""
        cursor = self._db.execute("UPDATE problems SET resolved_us=? WHERE device=? AND kind=? AND seq<=? "
                                  "AND resolved_us IS NULL", (at_us, device, GAP, upto_seq))
        return cursor.rowcount

    def problems(self, device: str | None = None) -> list[ProblemRow]:
        columns = "id, device, seq, object, kind, reason, topic, at_us, last_us, repeats, resolved_us"
        if device is None:
            rows = self._db.execute(f"SELECT {columns} FROM problems ORDER BY id")
        else:
            rows = self._db.execute(f"SELECT {columns} FROM problems WHERE device=? ORDER BY id", (device,))
        return [ProblemRow(*r) for r in rows]

    def open_device_fault(self, device: str, obj: str, reason: str, topic: str | None, at_us: int) -> bool:
        """One open device-fault problem per device and object: a later report only updates its reason and
        counts a repeat. True when a new problem was opened."""
        with self._write() as db:
            found = db.execute("SELECT id FROM problems WHERE device=? AND kind=? AND object=? AND resolved_us IS NULL",
                               (device, DEVICE_FAULT, obj)).fetchone()
            if found is not None:
                db.execute("UPDATE problems SET repeats=repeats+1, last_us=?, reason=? WHERE id=?",
                           (at_us, reason, found[0]))
                return False
            db.execute("INSERT INTO problems (device, seq, object, kind, reason, topic, at_us, last_us) "
                       "VALUES (?, NULL, ?, ?, ?, ?, ?, ?)", (device, obj, DEVICE_FAULT, reason, topic, at_us, at_us))
            return True

    def resolve_device_faults(self, device: str, keep: Sequence[str], at_us: int) -> list[str]:
        """Resolve the device's open device-fault problems whose object is not in ``keep``; their objects."""
        with self._write() as db:
            rows = db.execute("SELECT id, object FROM problems WHERE device=? AND kind=? AND resolved_us IS NULL",
                              (device, DEVICE_FAULT)).fetchall()
            done = [(r[0], r[1]) for r in rows if r[1] not in keep]
            db.executemany("UPDATE problems SET resolved_us=? WHERE id=?", [(at_us, i) for i, _ in done])
        return [obj for _, obj in done]

    def open_check_problem(self, device: str, kind: str, seq: int | None, obj: str | None, reason: str,
                           at_us: int) -> bool:
        """One open problem per device, kind and object: found again, it only says when it was last seen
        (``last_us``; not a repeat) and takes the newest reason. True when a new problem was opened."""
        with self._write() as db:
            found = db.execute("SELECT id FROM problems WHERE device=? AND kind=? AND object IS ? "
                               "AND resolved_us IS NULL", (device, kind, obj)).fetchone()
            if found is not None:
                db.execute("UPDATE problems SET last_us=?, reason=?, seq=? WHERE id=?", (at_us, reason, seq, found[0]))
                return False
            db.execute("INSERT INTO problems (device, seq, object, kind, reason, topic, at_us, last_us) "
                       "VALUES (?, ?, ?, ?, ?, NULL, ?, ?)", (device, seq, obj, kind, reason, at_us, at_us))
            return True

    def resolve_check_problem(self, device: str, kind: str, obj: str | None, at_us: int) -> int:
        """Resolve the open problem of this device, kind and object (the condition cleared); how many."""
        cursor = self._db.execute("UPDATE problems SET resolved_us=? WHERE device=? AND kind=? AND object IS ? "
                                  "AND resolved_us IS NULL", (at_us, device, kind, obj))
        return cursor.rowcount


class HealthRows(SqliteBase):
    def put_health(self, row: HealthRow) -> bool:
        """Keep ``row`` if it is the device's newest report (a later ``at_wall_us``); True when it was kept."""
        cursor = self._db.execute(
            "INSERT INTO health (device, at_wall_us, boot, state, summary, clock_trusted, checks, metrics, line, "
            "received_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
            "at_wall_us=excluded.at_wall_us, boot=excluded.boot, state=excluded.state, summary=excluded.summary, "
            "clock_trusted=excluded.clock_trusted, checks=excluded.checks, metrics=excluded.metrics, "
            "line=excluded.line, received_us=excluded.received_us WHERE excluded.at_wall_us > health.at_wall_us",
            (row.device, row.at_wall_us, row.boot, row.state, row.summary, int(row.clock_trusted),
             json.dumps(row.checks), json.dumps(row.metrics), row.line, row.received_us),
        )
        return cursor.rowcount == 1

    def health(self, device: str) -> HealthRow | None:
        row = self._one("SELECT device, at_wall_us, boot, state, summary, clock_trusted, checks, metrics, line, "
                        "received_us FROM health WHERE device=?", device)
        if row is None:
            return None
        return HealthRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]), json.loads(row[6]),
                         json.loads(row[7]), bytes(row[8]), row[9])


class AssignmentRows(SqliteBase):
    def add_assignment(self, row: AssignmentRow, line: str) -> None:
        """Keep an assignment the broker took, with its signed line; the same serial again changes nothing."""
        self._db.execute("INSERT OR IGNORE INTO assignments (device, serial, officer, issued_us, line) "
                         "VALUES (?, ?, ?, ?, ?)", (row.device, row.serial, row.officer, row.issued_us, line))

    def latest_assignments(self) -> dict[str, AssignmentRow]:
        """The newest assignment published per device; empty when none was ever published."""
        rows = self._db.execute("SELECT device, officer, issued_us, serial FROM assignments ORDER BY issued_us")
        return {r[0]: AssignmentRow(r[0], r[1], r[2], r[3]) for r in rows}
