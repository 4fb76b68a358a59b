"""agent/evidence/follower.py: the one incremental follower of a growing ledger (custody's and the uploader's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key

from agent.evidence.follower import LedgerFollower, SeqOffsets
from agent.evidence.ledger import Ledger
from agent.evidence.store import StoreLayout

DEVICE = "dev-follow"


class Taker:
    """A user that takes at most ``limit`` lines a call and notes what it was offered and told."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.offered: list[tuple[int, list[bytes]]] = []
        self.changes: list[str] = []

    def take(self, lines: list[bytes], offset: int) -> int:
        self.offered.append((offset, lines))
        return len(lines) if self.limit is None else min(self.limit, len(lines))


def _store(tmp_path: Path, events: int = 5) -> Path:
    store = tmp_path / "store"
    with Ledger.open(store, seeded_key(7), DEVICE, FakeClock()) as ledger:
        for index in range(events):
            ledger.append("event", {"kind": f"e{index}"})
    return store


def _follower(store: Path, *, whole: bool, block_bytes: int = 64) -> LedgerFollower:
    return LedgerFollower(StoreLayout(store), split=lambda data: data.splitlines(keepends=True),
                          block_bytes=block_bytes, whole=whole)


@pytest.mark.parametrize("whole", [True, False])
def test_each_look_offers_only_the_complete_lines_appended_since_the_last(tmp_path: Path, whole: bool) -> None:
    store = _store(tmp_path)
    ledger_path = store / "ledger.jsonl"
    lines = ledger_path.read_bytes().splitlines(keepends=True)
    follower, taker = _follower(store, whole=whole), Taker()
    follower.look(taker.take, taker.changes.append)
    offered = [line for _, batch in taker.offered for line in batch]
    assert offered == lines and follower.end == ledger_path.stat().st_size
    if whole:
        assert len(taker.offered) == 1  # all at once, as one run
    else:
        assert len(taker.offered) > 1  # a block at a time: never the whole ledger in memory
    ledger_path.chmod(0o644)
    with open(ledger_path, "ab") as handle:
        handle.write(lines[1][:20])  # a line being written
    taker.offered.clear()
    follower.look(taker.take, taker.changes.append)
    assert [line for _, batch in taker.offered for line in batch] == []
    assert taker.changes == [] and follower.full_reads == 1


def test_lines_not_taken_are_offered_again_at_the_next_look(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lines = (store / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    follower, taker = _follower(store, whole=True), Taker(limit=2)
    follower.look(taker.take, taker.changes.append)
    assert follower.end == len(lines[0]) + len(lines[1])
    taker.limit = None
    follower.look(taker.take, taker.changes.append)
    assert taker.offered[-1] == (follower.end - sum(map(len, lines[2:])), lines[2:])
    assert follower.line_at(len(lines[0])) == lines[1]
    assert follower.read(0, len(lines[0])) == lines[0]


@pytest.mark.parametrize("change, said", [
    ("first", "its first line changed"),
    ("last", "the line at offset"),
    ("cut", "shorter than read before"),
])
def test_a_change_that_is_not_an_append_starts_over_and_says_why(tmp_path: Path, change: str, said: str) -> None:
    store = _store(tmp_path)
    path = store / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    follower, taker = _follower(store, whole=False), Taker()
    follower.look(taker.take, taker.changes.append)
    flipped = {"first": 0, "last": len(lines) - 1}.get(change)
    if flipped is not None:
        lines[flipped] = lines[flipped][:-2] + (b"0" if lines[flipped][-2:-1] != b"0" else b"1") + b"\n"
    else:
        lines = lines[:-1]
    path.chmod(0o644)
    path.write_bytes(b"".join(lines))
    taker.offered.clear()
    follower.look(taker.take, taker.changes.append)
    assert len(taker.changes) == 1 and said in taker.changes[0]
    assert [line for _, batch in taker.offered for line in batch] == lines and follower.full_reads == 2


def test_seq_offsets_join_a_filled_gap_to_the_dense_run() -> None:
    offsets = SeqOffsets()
    assert offsets.add(1, 0) and offsets.add(3, 30) and not offsets.add(3, 99)
    assert len(offsets) == 1 and offsets.offset_of(3) == 30
    assert offsets.add(2, 10) and len(offsets) == 3 and offsets.irregular == {}
    assert [offsets.offset_of(seq) for seq in (0, 1, 2, 3, 4)] == [None, 0, 10, 30, None]
