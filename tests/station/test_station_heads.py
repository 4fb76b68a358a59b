"""The device's head at every hello, judged against what the station holds: rollback, fork, or nothing."""

from __future__ import annotations

from station_support import DeviceSide, Station, StoreFactory, hello_reply

from agent.evidence.store import read_records
from sync.protocol import Hello

DEVICE = "dev-0001"


def synced(station: Station, make_store: StoreFactory) -> tuple[DeviceSide, list[str]]:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.sync()
    return side, [r.link for r in read_records(root)]


def hello(side: DeviceSide, seq: int | None, link: str | None) -> int:
    return hello_reply(side.send("hello", Hello("s2", 1, seq, link).encode()), DEVICE).seq


def test_a_device_cut_back_on_its_own_chain_is_a_rollback_with_both_heads(station: Station,
                                                                         make_store: StoreFactory) -> None:
    side, links = synced(station, make_store)
    assert hello(side, 3, links[2]) == len(links)
    [problem] = station.problems()
    assert (problem.kind, problem.device, problem.seq) == ("rollback", DEVICE, 3)
    assert problem.reason == (f"rollback: the device's ledger ends at seq 3 (link {links[2][:16]}...), below what "
                              f"the station holds: the station holds seq {len(links)} (link {links[-1][:16]}...); "
                              f"records 4..{len(links)} are no longer on the device")
    hello(side, 3, links[2])  # every session says it again; one problem, counted
    assert len(station.problems()) == 1


def test_an_empty_ledger_is_a_rollback_to_nothing(station: Station, make_store: StoreFactory) -> None:
    side, links = synced(station, make_store)
    hello(side, 0, "0" * 64)
    [problem] = station.problems()
    assert problem.kind == "rollback" and f"records 1..{len(links)}" in problem.reason


def test_another_record_at_the_held_seq_is_a_fork(station: Station, make_store: StoreFactory) -> None:
    side, links = synced(station, make_store)
    hello(side, len(links), "ab" * 32)
    [problem] = station.problems()
    assert problem.kind == "fork" and problem.seq == len(links), problem


def test_the_same_head_or_one_ahead_or_none_at_all_is_no_problem(station: Station, make_store: StoreFactory) -> None:
    side, links = synced(station, make_store)
    hello(side, len(links), links[-1])
    hello(side, len(links) + 5, "cd" * 32)  # ahead: its records will show whether they continue the chain
    hello(side, None, None)  # an uploader from before heads were sent
    assert station.problems() == []
