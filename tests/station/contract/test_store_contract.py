"""The storage ports' contract (sync/station/ports.py), run over every backend in conftest.STORE_BACKENDS:
what the receiver relies on, whatever keeps the bytes."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest

from agent.errors import StoreError
from sync.station.ports import EvidenceStore, Placement
from sync.station.store import EMPTY_SHA256

DEVICE = "cam-1"
OTHER = "cam-2"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stage(store: EvidenceStore, data: bytes, device: str = DEVICE, chunk: int = 3) -> str:
    """Stage ``data`` in chunks written back to front (random writes), synced; its name."""
    name = sha(data)
    for offset in reversed(range(0, len(data), chunk)):
        store.write_partial(device, name, offset, data[offset:offset + chunk])
    store.sync_partials()
    return name


# --- staging ---------------------------------------------------------------------------------------------------

def test_staged_bytes_written_out_of_order_are_held_after_sync(make_store: Callable[[], EvidenceStore]) -> None:
    store = make_store()
    store.lock()
    data = b"0123456789abcdef"
    name = stage(store, data)
    store.close()
    reopened = make_store()
    assert reopened.partial_digest(DEVICE, name) == (name, len(data))


def test_nothing_staged_is_the_empty_digest_and_discard_forgets(store: EvidenceStore) -> None:
    name = sha(b"abc")
    assert store.partial_digest(DEVICE, name) == (EMPTY_SHA256, 0)
    stage(store, b"abc")
    store.discard_partial(DEVICE, name)
    assert store.partial_digest(DEVICE, name) == (EMPTY_SHA256, 0)
    store.discard_partial(DEVICE, name)  # nothing there: no error


def test_staging_is_per_device(store: EvidenceStore) -> None:
    name = stage(store, b"mine")
    assert store.partial_digest(OTHER, name) == (EMPTY_SHA256, 0)


def test_a_committed_file_is_an_object_and_leaves_staging(store: EvidenceStore) -> None:
    data = b"segment bytes" * 100
    name = stage(store, data, chunk=256)
    store.commit_partial(DEVICE, name)
    assert store.has_object(name) and store.object_size(name) == len(data)
    with store.open_object(name) as handle:
        assert handle.read() == data
    assert store.partial_digest(DEVICE, name) == (EMPTY_SHA256, 0)


def test_an_empty_file_commits_without_chunks(store: EvidenceStore) -> None:
    store.commit_partial(DEVICE, EMPTY_SHA256)
    assert store.has_object(EMPTY_SHA256) and store.object_size(EMPTY_SHA256) == 0


def test_there_is_free_space_to_report(store: EvidenceStore) -> None:
    assert store.free_bytes() > 0


# --- objects ---------------------------------------------------------------------------------------------------

def test_put_is_write_once(store: EvidenceStore) -> None:
    data = b"evidence"
    name = sha(data)
    assert not store.has_object(name)
    store.put_object(name, io.BytesIO(data))
    store.put_object(name, io.BytesIO(data))  # the same bytes again: accepted
    with pytest.raises(StoreError):
        store.put_object(name, io.BytesIO(b"other bytes"))
    with store.open_object(name) as handle:
        assert handle.read() == data
    assert store.object_size(name) == len(data)


def test_bytes_put_under_another_hash_are_refused(store: EvidenceStore) -> None:
    name = sha(b"what the record says")
    with pytest.raises(StoreError, match="hash to"):
        store.put_object(name, io.BytesIO(b"something else"))
    assert not store.has_object(name)


def test_a_commit_over_an_object_of_other_bytes_is_refused(store: EvidenceStore) -> None:
    data = b"stored first"
    name = sha(data)
    store.put_object(name, io.BytesIO(data))
    store.write_partial(DEVICE, name, 0, b"a different length")
    store.sync_partials()
    with pytest.raises(StoreError, match="not replaced"):
        store.commit_partial(DEVICE, name)
    with store.open_object(name) as handle:
        assert handle.read() == data


def test_a_device_layout_names_objects_once(store: EvidenceStore) -> None:
    first, second = b"first", b"second"
    store.put_object(sha(first), io.BytesIO(first))
    store.put_object(sha(second), io.BytesIO(second))
    assert store.placement(DEVICE, "segments/000001.ts", sha(first)) is Placement.NAME_MISSING
    store.place_file(DEVICE, "segments/000001.ts", sha(first))
    store.place_file(DEVICE, "segments/000001.ts", sha(first))  # idempotent
    assert store.placement(DEVICE, "segments/000001.ts", sha(first)) is Placement.OK
    with store.open_placed(DEVICE, "segments/000001.ts") as handle:
        assert handle.read() == first
    with pytest.raises(StoreError, match="not replaced"):
        store.place_file(DEVICE, "segments/000001.ts", sha(second))
    assert store.placement(DEVICE, "segments/000001.ts", sha(second)) is Placement.REPLACED
    assert store.placement(DEVICE, "segments/000002.ts", sha(b"never")) is Placement.BOTH_MISSING


def test_names_the_store_cannot_hold_are_refused(store: EvidenceStore) -> None:
    with pytest.raises(StoreError):
        store.write_partial("../escape", sha(b"x"), 0, b"x")
    with pytest.raises(StoreError):
        store.has_object("not-a-hash")


# --- ledger copies ---------------------------------------------------------------------------------------------

def test_records_append_in_order_and_read_by_range(store: EvidenceStore) -> None:
    assert store.ledger_size(DEVICE) == 0 and store.read_ledger(DEVICE) == b""
    assert store.append_records(DEVICE, [b"one\n", b"two\n"]) == 0
    assert store.append_records(DEVICE, [b"three\n"]) == 8
    assert store.read_ledger(DEVICE) == b"one\ntwo\nthree\n"
    assert store.read_ledger(DEVICE, 4, 4) == b"two\n"
    assert store.ledger_size(DEVICE) == 14
    assert store.read_ledger(OTHER) == b""


def test_a_tail_set_aside_is_kept_and_no_longer_read(make_store: Callable[[], EvidenceStore]) -> None:
    store = make_store()
    store.lock()
    store.append_records(DEVICE, [b"kept\n"])
    store.append_records(DEVICE, [b"unindexed\n"])
    assert store.set_aside_tails(DEVICE) == []
    where = store.set_aside_tail(DEVICE, 5)
    assert where
    assert store.read_ledger(DEVICE) == b"kept\n" and store.ledger_size(DEVICE) == 5
    assert store.append_records(DEVICE, [b"next\n"]) == 5
    store.append_records(DEVICE, [b"torn"])
    store.set_aside_tail(DEVICE, 10)
    store.close()
    reopened = make_store()
    assert reopened.read_ledger(DEVICE) == b"kept\nnext\n"
    assert reopened.set_aside_tails(DEVICE) == [b"unindexed\n", b"torn"]  # nothing appended was lost


def test_a_mark_past_the_end_is_refused(store: EvidenceStore) -> None:
    store.append_records(DEVICE, [b"a\n"])
    with pytest.raises(StoreError):
        store.set_aside_tail(DEVICE, 3)  # past the end: nothing to mark
    assert store.read_ledger(DEVICE) == b"a\n" and store.set_aside_tails(DEVICE) == []


def test_the_ack_log_only_grows(store: EvidenceStore) -> None:
    assert store.read_ack_log(DEVICE) == b""
    store.append_acks(DEVICE, [b"ack 1\n"])
    store.append_acks(DEVICE, [b"ack 2\n", b"ack 3\n"])
    assert store.read_ack_log(DEVICE) == b"ack 1\nack 2\nack 3\n"


# --- the lock --------------------------------------------------------------------------------------------------

def test_one_receiver_per_store(make_store: Callable[[], EvidenceStore]) -> None:
    first = make_store()
    first.lock()
    second = make_store()
    with pytest.raises(StoreError, match="in use"):
        second.lock()
    first.close()
    second.lock()
