"""sync/uploader/ledger_view.py: the uploader's incremental, read-only view of the device's ledger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key

from agent.errors import StoreError
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from sync.uploader.ledger_view import LedgerView

DEVICE = "dev-view"


def open_ledger(store: Path) -> Ledger:
    return Ledger.open(store, seeded_key(4), DEVICE, FakeClock())


def ledger_file(store: Path) -> Path:
    return store / "ledger.jsonl"


def test_refresh_takes_in_appended_lines_only_when_complete(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_ledger(store) as led:
        led.append("segment", {"file": "segments/000001.mp4", "sha256": "a" * 64, "size": 5})
        view = LedgerView(store, DEVICE)
        view.refresh()
        assert view.head == led.head and [r.record.type for r in view.records] == ["segment"]
        led.append("event", {"kind": "x"})
        line = led.append("event", {"kind": "y"}).to_line()
    # Half a line (being written): not part of the view yet.
    with open(ledger_file(store), "ab") as handle:
        handle.write(line[:10])
    view.refresh()
    assert view.head[0] == 4
    with open(ledger_file(store), "r+b") as handle:
        handle.truncate(os.path.getsize(ledger_file(store)) - 10)
    assert [line.seq for line in view.lines_after(2)] == [3, 4]
    assert view.lines_after(4) == []
    records = {r.seq: r for r in read_records(store)}
    assert all(view.link_of(seq) == records[seq].link for seq in records)
    assert view.link_of(0) == "0" * 64 and view.link_of(5) is None


def test_an_unverifiable_last_line_is_held_back(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_ledger(store) as led:
        led.append("event", {"kind": "x"})
    data = ledger_file(store).read_bytes()
    lines = data.splitlines(keepends=True)
    last = lines[-1]
    forged = last[:-3] + (b"0" if last[-3:-2] != b"0" else b"1") + last[-2:]  # one signature digit changed
    ledger_file(store).write_bytes(b"".join(lines[:-1]) + forged)
    view = LedgerView(store, DEVICE)
    view.refresh()
    assert view.head[0] == 1 and view.held_back is not None and "seq 2" in view.held_back
    assert view.bad is None


def test_a_damaged_line_stops_the_view_before_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_ledger(store) as led:
        led.append("event", {"kind": "x"})
        led.append("event", {"kind": "y"})
    lines = ledger_file(store).read_bytes().splitlines(keepends=True)
    ledger_file(store).write_bytes(lines[0] + b"garbage\n" + lines[2])
    view = LedgerView(store, DEVICE)
    view.refresh()
    assert view.head[0] == 1
    assert view.bad is not None and view.bad.number == 2 and view.bad.raw == b"garbage\n"


def test_a_ledger_cut_and_rewritten_underneath_is_read_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_ledger(store) as led:
        old = led.append("event", {"kind": "x"})
    view = LedgerView(store, DEVICE)
    view.refresh()
    assert view.link_of(2) == old.link
    # Seq 2 cut away and written again (as a torn-tail recovery leaves it): another record at the same seq.
    first_line = ledger_file(store).read_bytes().splitlines(keepends=True)[0]
    ledger_file(store).write_bytes(first_line)
    with Ledger.open(store, seeded_key(4), DEVICE, FakeClock(wall_us=10**15)) as led:
        new_head = led.head
    view.refresh()
    assert view.head == new_head and view.link_of(2) != old.link
    assert view.link_of(2) == read_records(store)[1].link


def test_a_missing_ledger_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="ledger"):
        LedgerView(tmp_path / "nothing", DEVICE).refresh()
