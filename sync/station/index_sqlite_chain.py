"""The SQLite index: enrolled devices, sync sessions, the chain of stored records with their file claims,
and the cases the records open and close (sync/station/index_ports.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from agent.evidence.cases import cases_in
from agent.evidence.encoding import GENESIS_PREV
from agent.evidence.record import SEGMENT_TYPES
from sync.station.index_sqlite_base import SqliteBase
from sync.station.model import CaseRow, CaseStage, CaseUpdate, ChainHead, Claim, DeviceRow, RecordRow, SessionRow

SESSION_COUNTERS = ("records", "duplicate_records", "chunks_written", "duplicate_chunks", "files_stored")


class DeviceRows(SqliteBase):
    def put_device(self, row: DeviceRow) -> None:
        self._db.execute(
            "INSERT INTO devices (id, public_key, fingerprint, enrolled_us, revoked) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET public_key=excluded.public_key, fingerprint=excluded.fingerprint, "
            "enrolled_us=excluded.enrolled_us, revoked=excluded.revoked",
            (row.id, row.public_key, row.fingerprint, row.enrolled_us, int(row.revoked)),
        )

    def device(self, device: str) -> DeviceRow | None:
        row = self._one("SELECT id, public_key, fingerprint, enrolled_us, revoked FROM devices WHERE id=?", device)
        return None if row is None else DeviceRow(row[0], row[1], row[2], row[3], bool(row[4]))

    def devices(self) -> list[DeviceRow]:
        rows = self._db.execute("SELECT id, public_key, fingerprint, enrolled_us, revoked FROM devices ORDER BY id")
        return [DeviceRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


class SessionRows(SqliteBase):
    def open_session(self, device: str, session: str, started_us: int, t1_us: int, t2_us: int) -> None:
        # A hello delivered twice keeps the first row (and its counters). t3 and t4 come with the clock report.
        self._db.execute(
            "INSERT OR IGNORE INTO sessions (device, id, started_us, t1_us, t2_us) VALUES (?, ?, ?, ?, ?)",
            (device, session, started_us, t1_us, t2_us),
        )

    def set_clock(self, device: str, session: str, stamps: tuple[int, int, int, int], offset_us: int,
                  delay_us: int) -> bool:
        cursor = self._db.execute(
            "UPDATE sessions SET t1_us=?, t2_us=?, t3_us=?, t4_us=?, offset_us=?, delay_us=? WHERE device=? AND id=?",
            (*stamps, offset_us, delay_us, device, session),
        )
        return cursor.rowcount == 1

    def count(self, device: str, session: str, counter: str, amount: int = 1) -> None:
        if counter not in SESSION_COUNTERS:
            raise ValueError(f"session counter {counter!r} does not exist")
        self._db.execute(f"UPDATE sessions SET {counter}={counter}+? WHERE device=? AND id=?",
                         (amount, device, session))

    def end_session(self, device: str, session: str, ended_us: int) -> None:
        self._db.execute("UPDATE sessions SET ended_us=? WHERE device=? AND id=?", (ended_us, device, session))

    _SESSION_COLUMNS = ("device, id, started_us, t1_us, t2_us, t3_us, t4_us, offset_us, delay_us, records, "
                        "duplicate_records, chunks_written, duplicate_chunks, files_stored, ended_us")

    def session(self, device: str, session: str) -> SessionRow | None:
        row = self._one(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE device=? AND id=?", device, session)
        return None if row is None else SessionRow(*row)

    def last_session(self, device: str) -> SessionRow | None:
        row = self._one(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE device=? "
                        "ORDER BY started_us DESC, rowid DESC LIMIT 1", device)
        return None if row is None else SessionRow(*row)

    def clock_offsets(self, device: str) -> list[tuple[int, int]]:
        """``(started_us, offset_us)`` of the device's sessions that measured the clock, in start order."""
        rows = self._db.execute("SELECT started_us, offset_us FROM sessions WHERE device=? AND offset_us IS NOT NULL "
                                "ORDER BY started_us, rowid", (device,))
        return [(r[0], r[1]) for r in rows]


class ChainRows(SqliteBase):
    def head(self, device: str) -> ChainHead:
        row = self._one("SELECT seq, link, offset + length FROM records WHERE device=? ORDER BY seq DESC LIMIT 1",
                        device)
        return ChainHead(0, GENESIS_PREV, 0) if row is None else ChainHead(row[0], row[1], row[2])

    def record(self, device: str, seq: int) -> RecordRow | None:
        row = self._one("SELECT device, seq, link, type, wall_us, case_id, stored_us, offset, length FROM records "
                        "WHERE device=? AND seq=?", device, seq)
        return None if row is None else RecordRow(*row)

    def record_rows(self, device: str) -> list[RecordRow]:
        rows = self._db.execute("SELECT device, seq, link, type, wall_us, case_id, stored_us, offset, length FROM "
                                "records WHERE device=? ORDER BY seq", (device,))
        return [RecordRow(*r) for r in rows]

    def add_records(self, rows: Sequence[RecordRow], claims: Sequence[Claim], cases: Sequence[CaseUpdate]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO records (device, seq, link, type, wall_us, case_id, stored_us, offset, length) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.device, r.seq, r.link, r.type, r.wall_us, r.case_id, r.stored_us, r.offset, r.length)
                 for r in rows],
            )
            # The first record naming a file is the one that counts, as in the verifier.
            db.executemany(
                "INSERT OR IGNORE INTO claims (device, name, sha256, size, seq, type, wall_us) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(c.device, c.name, c.sha256, c.size, c.seq, c.type, c.wall_us) for c in claims],
            )
            for device in dict.fromkeys(case.device for case in cases):
                known = [row[0] for row in db.execute("SELECT case_id FROM cases WHERE device=?", (device,))]
                for case, opens in case_updates(known, [case for case in cases if case.device == device]):
                    _apply_case(db, case, opens=opens)

    def claim(self, device: str, name: str) -> Claim | None:
        row = self._one("SELECT device, name, sha256, size, seq, type, wall_us FROM claims WHERE device=? AND name=?",
                        device, name)
        return None if row is None else Claim(*row)

    def claims_waiting(self, device: str) -> list[Claim]:
        """Claims whose file is not stored yet, in record order."""
        rows = self._db.execute(
            "SELECT c.device, c.name, c.sha256, c.size, c.seq, c.type, c.wall_us FROM claims c "
            "LEFT JOIN files f ON f.device = c.device AND f.name = c.name WHERE c.device=? AND f.name IS NULL "
            "ORDER BY c.seq", (device,))
        return [Claim(*r) for r in rows]

    def footage_waiting(self, device: str) -> list[tuple[Claim, int]]:
        """Footage claims whose file is not stored, in record order, each with when its record was stored."""
        marks = ", ".join("?" * len(SEGMENT_TYPES))
        rows = self._db.execute(
            "SELECT c.device, c.name, c.sha256, c.size, c.seq, c.type, c.wall_us, r.stored_us FROM claims c "
            "JOIN records r ON r.device = c.device AND r.seq = c.seq "
            "LEFT JOIN files f ON f.device = c.device AND f.name = c.name "
            f"WHERE c.device=? AND f.name IS NULL AND c.type IN ({marks}) ORDER BY c.seq", (device, *SEGMENT_TYPES))
        return [(Claim(*r[:7]), r[7]) for r in rows]


class CaseRows(SqliteBase):
    def cases(self, device: str) -> list[CaseRow]:
        rows = self._db.execute("SELECT case_id, procedure, opened_seq, closed_seq, missing, stages FROM cases "
                                "WHERE device=? ORDER BY opened_seq", (device,))
        return [_case_row(device, *r) for r in rows]


def _case_row(device: str, case_id: str, procedure: str, opened_seq: int, closed_seq: int | None,
              missing: str | None, stages: str) -> CaseRow:
    listed = None if missing is None else json.loads(missing)
    return CaseRow(
        device=device, case_id=case_id, procedure=procedure, opened_seq=opened_seq, closed_seq=closed_seq,
        missing=tuple(m for m in listed if isinstance(m, str)) if isinstance(listed, list) else (),
        stages=tuple(CaseStage(str(s.get("stage")), str(s.get("status")), int(s["seq"]))
                     for s in json.loads(stages) if isinstance(s, dict)),
    )


def case_updates(known: Collection[str], updates: Sequence[CaseUpdate]) -> list[tuple[CaseUpdate, bool]]:
    """Those of one device's updates (in ledger order) that are about a case by agent/evidence/cases.py's rule,
    in that order, each with whether it opens its case; ``known``: the cases the records stored before opened.

    Those come first, as their opens, so a record naming one of them belongs to it and a second open of it
    does not open it again; a record naming a case opened before the records the station holds is about no
    case (the timeline says so)."""
    records = [("case-open", {"case_id": case_id}) for case_id in known]
    records += [(update.type, {"case_id": update.case_id}) for update in updates]  # the update names its case
    first = len(known)
    found = [(position, case.opened) for case in cases_in(records) for position in case.positions
             if position >= first]
    return [(updates[position - first], position == opened) for position, opened in sorted(found)]


def _apply_case(db: sqlite3.Connection, case: CaseUpdate, *, opens: bool) -> None:
    body = case.body
    if opens:
        db.execute("INSERT INTO cases (device, case_id, procedure, opened_seq) VALUES (?, ?, ?, ?)",
                   (case.device, case.case_id, str(body.get("procedure", "")), case.seq))
    elif case.type == "stage":
        found = db.execute("SELECT stages FROM cases WHERE device=? AND case_id=?", (case.device, case.case_id))
        stages = json.loads(found.fetchone()[0])
        stages.append({"stage": body.get("stage"), "status": body.get("status"), "seq": case.seq})
        db.execute("UPDATE cases SET stages=? WHERE device=? AND case_id=?",
                   (json.dumps(stages), case.device, case.case_id))
    elif case.type == "case-close":
        db.execute("UPDATE cases SET closed_seq=?, missing=? WHERE device=? AND case_id=? AND closed_seq IS NULL",
                   (case.seq, json.dumps(body.get("missing", [])), case.device, case.case_id))
