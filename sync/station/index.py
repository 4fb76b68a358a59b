"""The station's index: enrolled devices, sync sessions, stored records, file claims and files, staged byte
ranges, cases, problems, health reports and the officer assignments the station published.

:class:`Index` is the port; :class:`SqliteIndex` implements it with sqlite3 (WAL, ``synchronous=FULL``,
one connection used from one thread); PostgreSQL fits behind the same methods. The evidence itself is in
the evidence store: the index says what is there and where, and is written only after the evidence is
durable, so after a crash it may lag the store but never run ahead of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from agent.errors import StoreError
from agent.evidence.encoding import GENESIS_PREV
from agent.evidence.fsutil import display_path
from agent.evidence.record import SEGMENT_TYPES
from sync.station.model import (
    DEVICE_FAULT,
    GAP,
    AssignmentRow,
    CaseUpdate,
    ChainHead,
    Claim,
    DeviceRow,
    FileRow,
    HealthRow,
    ProblemRow,
    RecordRow,
    SessionRow,
)

SCHEMA_VERSION = 1
SESSION_COUNTERS = ("records", "duplicate_records", "chunks_written", "duplicate_chunks", "files_stored")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL, enrolled_us INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sessions (
    device TEXT NOT NULL, id TEXT NOT NULL, started_us INTEGER NOT NULL,
    t1_us INTEGER, t2_us INTEGER, t3_us INTEGER, t4_us INTEGER, offset_us INTEGER, delay_us INTEGER,
    records INTEGER NOT NULL DEFAULT 0, duplicate_records INTEGER NOT NULL DEFAULT 0,
    chunks_written INTEGER NOT NULL DEFAULT 0, duplicate_chunks INTEGER NOT NULL DEFAULT 0,
    files_stored INTEGER NOT NULL DEFAULT 0, ended_us INTEGER,
    PRIMARY KEY (device, id));
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL, seq INTEGER NOT NULL, link TEXT NOT NULL, type TEXT NOT NULL, wall_us INTEGER NOT NULL,
    case_id TEXT, stored_us INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    device TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, wall_us INTEGER NOT NULL,
    PRIMARY KEY (device, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    device TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL,
    stored_us INTEGER NOT NULL,
    PRIMARY KEY (device, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ranges (
    device TEXT NOT NULL, sha256 TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (device, sha256, offset, length)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cases (
    device TEXT NOT NULL, case_id TEXT NOT NULL, procedure TEXT NOT NULL, opened_seq INTEGER NOT NULL,
    closed_seq INTEGER, missing TEXT, stages TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (device, case_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (
    id INTEGER PRIMARY KEY, device TEXT, seq INTEGER, object TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL,
    topic TEXT, at_us INTEGER NOT NULL, last_us INTEGER NOT NULL, repeats INTEGER NOT NULL DEFAULT 1,
    resolved_us INTEGER);
CREATE INDEX IF NOT EXISTS problems_by_device ON problems (device, kind, seq);
CREATE TABLE IF NOT EXISTS health (
    device TEXT PRIMARY KEY, at_wall_us INTEGER NOT NULL, boot TEXT NOT NULL, state TEXT NOT NULL,
    summary TEXT NOT NULL, clock_trusted INTEGER NOT NULL, checks TEXT NOT NULL, metrics TEXT NOT NULL,
    line BLOB NOT NULL, received_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS assignments (
    device TEXT NOT NULL, serial TEXT NOT NULL, officer TEXT NOT NULL, issued_us INTEGER NOT NULL,
    line TEXT NOT NULL, PRIMARY KEY (device, serial)) WITHOUT ROWID;
"""


class Index(Protocol):
    def close(self) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """One transaction around many calls (group commit): durable together at the end, or not at all."""
        ...

    # devices
    def put_device(self, row: DeviceRow) -> None: ...
    def device(self, device: str) -> DeviceRow | None: ...
    def devices(self) -> list[DeviceRow]: ...

    # sessions
    def open_session(self, device: str, session: str, started_us: int, t1_us: int, t2_us: int) -> None: ...
    def set_clock(self, device: str, session: str, stamps: tuple[int, int, int, int], offset_us: int,
                  delay_us: int) -> bool: ...
    def count(self, device: str, session: str, counter: str, amount: int = 1) -> None: ...
    def end_session(self, device: str, session: str, ended_us: int) -> None: ...
    def session(self, device: str, session: str) -> SessionRow | None: ...
    def last_session(self, device: str) -> SessionRow | None: ...

    # records, claims, cases
    def head(self, device: str) -> ChainHead: ...
    def record(self, device: str, seq: int) -> RecordRow | None: ...
    def add_records(self, rows: Sequence[RecordRow], claims: Sequence[Claim], cases: Sequence[CaseUpdate]) -> None:
        ...
    def cases(self, device: str) -> list[dict[str, Any]]: ...
    def claim(self, device: str, name: str) -> Claim | None: ...
    def claims_waiting(self, device: str) -> list[Claim]: ...

    # files and staged ranges
    def stored_file(self, device: str, name: str) -> FileRow | None: ...
    def files_after(self, after: tuple[str, str], limit: int) -> list[FileRow]: ...
    def record_rows(self, device: str) -> list[RecordRow]: ...
    def add_file(self, row: FileRow) -> None: ...
    def file_totals(self, device: str) -> tuple[int, int]: ...
    def ranges(self, device: str, sha256: str) -> list[tuple[int, int]]: ...
    def add_range(self, device: str, sha256: str, offset: int, length: int) -> None: ...
    def clear_ranges(self, device: str, sha256: str) -> None: ...
    def staged(self, device: str) -> dict[str, int]: ...

    # problems
    def add_problem(self, device: str | None, seq: int | None, obj: str | None, kind: str, reason: str,
                    topic: str | None, at_us: int) -> bool: ...
    def resolve_gaps(self, device: str, upto_seq: int, at_us: int) -> int: ...
    def problems(self, device: str | None = None) -> list[ProblemRow]: ...

    # health
    def put_health(self, row: HealthRow) -> bool: ...
    def health(self, device: str) -> HealthRow | None: ...
    def open_device_fault(self, device: str, obj: str, reason: str, topic: str | None, at_us: int) -> bool: ...
    def resolve_device_faults(self, device: str, keep: Sequence[str], at_us: int) -> list[str]: ...

    # officer assignments
    def add_assignment(self, row: AssignmentRow, line: str) -> None: ...
    def latest_assignments(self) -> dict[str, AssignmentRow]: ...

    # the overdue check (sync/station/overdue.py)
    def footage_waiting(self, device: str) -> list[tuple[Claim, int]]: ...
    def clock_offsets(self, device: str) -> list[tuple[int, int]]: ...
    def open_check_problem(self, device: str, kind: str, seq: int | None, obj: str | None, reason: str,
                           at_us: int) -> bool: ...
    def resolve_check_problem(self, device: str, kind: str, obj: str | None, at_us: int) -> int: ...


class SqliteIndex:
    """The index in one SQLite file. Not thread-safe by design: one connection, used by one thread."""

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
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"index {name}: schema version {version} is newer than this station's "
                                 f"{SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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

    # --- devices ---------------------------------------------------------------------------------------------

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

    # --- sessions --------------------------------------------------------------------------------------------

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

    # --- records, claims, cases -------------------------------------------------------------------------------

    def head(self, device: str) -> ChainHead:
        row = self._one("SELECT seq, link, offset + length FROM records WHERE device=? ORDER BY seq DESC LIMIT 1",
                        device)
        return ChainHead(0, GENESIS_PREV, 0) if row is None else ChainHead(row[0], row[1], row[2])

    def record(self, device: str, seq: int) -> RecordRow | None:
        row = self._one("SELECT device, seq, link, type, wall_us, case_id, stored_us, offset, length FROM records "
                        "WHERE device=? AND seq=?", device, seq)
        return None if row is None else RecordRow(*row)

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
            for case in cases:
                self._apply_case(db, case)

    @staticmethod
    def _apply_case(db: sqlite3.Connection, case: CaseUpdate) -> None:
        body = case.body
        if case.type == "case-open":
            db.execute("INSERT OR IGNORE INTO cases (device, case_id, procedure, opened_seq) VALUES (?, ?, ?, ?)",
                       (case.device, case.case_id, str(body.get("procedure", "")), case.seq))
            return
        row = db.execute("SELECT stages FROM cases WHERE device=? AND case_id=?", (case.device, case.case_id))
        found = row.fetchone()
        if found is None:
            return  # about a case opened before the records the station holds (the timeline says so)
        if case.type == "stage":
            stages = json.loads(found[0])
            stages.append({"stage": body.get("stage"), "status": body.get("status"), "seq": case.seq})
            db.execute("UPDATE cases SET stages=? WHERE device=? AND case_id=?",
                       (json.dumps(stages), case.device, case.case_id))
        elif case.type == "case-close":
            db.execute("UPDATE cases SET closed_seq=?, missing=? WHERE device=? AND case_id=? AND closed_seq IS NULL",
                       (case.seq, json.dumps(body.get("missing", [])), case.device, case.case_id))

    def cases(self, device: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT case_id, procedure, opened_seq, closed_seq, missing, stages FROM cases "
                                "WHERE device=? ORDER BY opened_seq", (device,))
        return [{"case_id": r[0], "procedure": r[1], "opened_seq": r[2], "closed_seq": r[3],
                 "missing": None if r[4] is None else json.loads(r[4]), "stages": json.loads(r[5])} for r in rows]

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

    # --- files and staged ranges ------------------------------------------------------------------------------

    def stored_file(self, device: str, name: str) -> FileRow | None:
        row = self._one("SELECT device, name, sha256, size, seq, stored_us FROM files WHERE device=? AND name=?",
                        device, name)
        return None if row is None else FileRow(*row)

    def files_after(self, after: tuple[str, str], limit: int) -> list[FileRow]:
        """Stored files in (device, name) order after ``after`` (("", "") for the first), at most ``limit``."""
        rows = self._db.execute("SELECT device, name, sha256, size, seq, stored_us FROM files WHERE (device, name) > "
                                "(?, ?) ORDER BY device, name LIMIT ?", (*after, limit))
        return [FileRow(*r) for r in rows]

    def record_rows(self, device: str) -> list[RecordRow]:
        rows = self._db.execute("SELECT device, seq, link, type, wall_us, case_id, stored_us, offset, length FROM "
                                "records WHERE device=? ORDER BY seq", (device,))
        return [RecordRow(*r) for r in rows]

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

    # --- problems --------------------------------------------------------------------------------------------

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

    # --- health ----------------------------------------------------------------------------------------------

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

    # --- officer assignments ---------------------------------------------------------------------------------

    def add_assignment(self, row: AssignmentRow, line: str) -> None:
        """Keep an assignment the broker took, with its signed line; the same serial again changes nothing."""
        self._db.execute("INSERT OR IGNORE INTO assignments (device, serial, officer, issued_us, line) "
                         "VALUES (?, ?, ?, ?, ?)", (row.device, row.serial, row.officer, row.issued_us, line))

    def latest_assignments(self) -> dict[str, AssignmentRow]:
        """The newest assignment published per device; empty when none was ever published."""
        rows = self._db.execute("SELECT device, officer, issued_us, serial FROM assignments ORDER BY issued_us")
        return {r[0]: AssignmentRow(r[0], r[1], r[2], r[3]) for r in rows}

    # --- the overdue check ------------------------------------------------------------------------------------

    def footage_waiting(self, device: str) -> list[tuple[Claim, int]]:
        """Footage claims whose file is not stored, in record order, each with when its record was stored."""
        marks = ", ".join("?" * len(SEGMENT_TYPES))
        rows = self._db.execute(
            "SELECT c.device, c.name, c.sha256, c.size, c.seq, c.type, c.wall_us, r.stored_us FROM claims c "
            "JOIN records r ON r.device = c.device AND r.seq = c.seq "
            "LEFT JOIN files f ON f.device = c.device AND f.name = c.name "
            f"WHERE c.device=? AND f.name IS NULL AND c.type IN ({marks}) ORDER BY c.seq", (device, *SEGMENT_TYPES))
        return [(Claim(*r[:7]), r[7]) for r in rows]

    def clock_offsets(self, device: str) -> list[tuple[int, int]]:
        """``(started_us, offset_us)`` of the device's sessions that measured the clock, in start order."""
        rows = self._db.execute("SELECT started_us, offset_us FROM sessions WHERE device=? AND offset_us IS NOT NULL "
                                "ORDER BY started_us, rowid", (device,))
        return [(r[0], r[1]) for r in rows]

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
