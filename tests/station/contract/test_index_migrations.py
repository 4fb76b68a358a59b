"""The SQLite index's schema migrations: a version-1 file as today's station wrote it is migrated at open,
its rows intact; a newer file is refused and left alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.errors import StoreError
from sync.station.index import SCHEMA_VERSION, SqliteIndex
from sync.station.index_schema import MIGRATIONS
from sync.station.model import GAP, CaseRow, HealthRow

VERSION_1 = Path(__file__).with_name("index-v1.sql")


def version_1_file(path: Path, drop: tuple[str, ...] = ()) -> Path:
    db = sqlite3.connect(path)
    db.executescript(VERSION_1.read_text())
    for table in drop:
        db.execute(f"DROP TABLE {table}")
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()
    return path


def versions(path: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT version, what FROM schema_version ORDER BY version")]
    finally:
        db.close()


def test_the_migrations_are_an_ordered_list_ending_at_the_schema_version() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert SCHEMA_VERSION >= 2


def test_a_version_1_file_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = version_1_file(tmp_path / "index.sqlite")
    index = SqliteIndex(path)
    try:
        assert index.migrated == list(range(2, SCHEMA_VERSION + 1))
        assert [d.id for d in index.devices()] == ["cam-1"]
        assert index.head("cam-1").seq == 3 and index.head("cam-1").ledger_bytes == 360
        assert index.cases("cam-1") == [CaseRow("cam-1", "case-7", "inspection", 2, None, (), ())]
        assert [c.name for c in index.claims_waiting("cam-1")] == ["segments/000001.ts"]
        assert index.ranges("cam-1", "44" * 32) == [(0, 1024)]
        [problem] = index.problems("cam-1")
        assert (problem.kind, problem.seq, problem.reason) == (GAP, 5, "seq 4 missing")
        health = index.health("cam-1")
        assert health is not None and health.summary == "all good" and health.line == b"line\n"
        assert index.latest_assignments()["cam-1"].officer == "A1"
        session = index.last_session("cam-1")
        assert session is not None and session.records == 3 and session.offset_us == 5
    finally:
        index.close()
    assert [v for v, _ in versions(path)] == list(range(1, SCHEMA_VERSION + 1))
    again = SqliteIndex(path)
    try:
        assert again.migrated == []
    finally:
        again.close()


def test_a_version_1_file_from_before_the_health_tables_is_completed(tmp_path: Path) -> None:
    # Version 1 grew the health and assignments tables without a new number.
    index = SqliteIndex(version_1_file(tmp_path / "index.sqlite", drop=("health", "assignments")))
    try:
        assert index.health("cam-1") is None
        assert index.put_health(HealthRow("cam-1", 1, "b", "ok", "fine", True, [], {}, b"l\n", 2))
        assert index.latest_assignments() == {}
    finally:
        index.close()


def test_a_new_file_gets_every_migration(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    try:
        assert index.migrated == list(range(1, SCHEMA_VERSION + 1))
        index.add_problem(None, None, None, GAP, "x", None, 1)
    finally:
        index.close()
    assert [v for v, _ in versions(tmp_path / "index.sqlite")] == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("how", ["schema_version", "user_version"])
def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path, how: str) -> None:
    path = tmp_path / "index.sqlite"
    SqliteIndex(path).close()
    db = sqlite3.connect(path)
    if how == "schema_version":
        db.execute("INSERT INTO schema_version (version, what) VALUES (?, 'from a later station')",
                   (SCHEMA_VERSION + 1,))
        db.commit()
    else:
        db.execute("DROP TABLE schema_version")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer than this station's "
                                         f"{SCHEMA_VERSION}"):
        SqliteIndex(path)
    assert path.read_bytes() == before

