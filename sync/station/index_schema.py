"""The station index's schema and its migrations: an ordered list, applied at open.

Each migration takes the schema from the version before it to its own; :func:`migrate` applies those past
the file's version, each in its own transaction with its row in ``schema_version``, so that a station never
runs on a schema it half changed. Version 1 is the schema the station had before the table existed (its
version in ``PRAGMA user_version``, kept as well so that an older station refuses a newer file). A file
newer than this station knows is refused, not touched. A backend other than SQLite keeps the same list of
versions with its own statements.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from agent.errors import StoreError

_VERSION_1 = """
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



@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    script: str


MIGRATIONS = (
    Migration(1, "devices, sessions, records, claims, files, ranges, cases, problems, health, assignments",
              _VERSION_1),
    # Version 1 grew tables (health, assignments) without a new number: its script, all IF NOT EXISTS, runs
    # again here so that a version-1 file from before them is complete, as the open of version 1 made it.
    Migration(2, "the schema_version table: one row per migration applied",
              _VERSION_1 + "\nCREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
              "what TEXT NOT NULL);"),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def file_version(db: sqlite3.Connection) -> int:
    """The schema version of an open index (0: a new, empty file)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone():
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, name: str) -> list[int]:
    """Bring the index ``name`` (for messages) to :data:`SCHEMA_VERSION`; the versions applied, in order."""
    version = file_version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(f"index {name}: schema version {version} is newer than this station's {SCHEMA_VERSION}")
    applied = []
    for step in MIGRATIONS:
        if step.version <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(step.script):
                db.execute(statement)
            if step.version >= 2:  # the table exists from version 2 on: earlier versions are noted with it
                db.executemany("INSERT OR IGNORE INTO schema_version (version, what) VALUES (?, ?)",
                               [(m.version, m.what) for m in MIGRATIONS if m.version <= step.version])
            db.execute(f"PRAGMA user_version={step.version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(step.version)
    return applied


def _statements(script: str) -> list[str]:
    """The statements of a migration script (executescript would commit the migration's transaction)."""
    return [s.strip() + ";" for s in script.split(";") if s.strip()]
