"""sync/uploader/custody_port.py: which custody records a receipt, the ack spool, the receipt worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import seeded_key

from agent.errors import LedgerBusyError, LedgerError, VerificationError
from agent.evidence.ack import Ack, sign_ack
from agent.evidence.custody import Custody
from agent.evidence.keys import fingerprint
from sync.uploader.custody_port import AckSpool, CustodyChain, ReceiptWorker, spool_folder


def ack_line(seq: int) -> bytes:
    key = seeded_key(9)
    ack = Ack("st", fingerprint(key.public_raw), "dev-a", "s", seq, "ab" * 32, (), 1)
    return sign_ack(ack, key).to_line()


class Scripted:
    """A custody whose calls fail with the queued errors, then succeed; records what it was given."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.receipts: list[bytes] = []
        self.purges = 0

    def record_receipt(self, ack_line: bytes) -> str:
        if self.errors:
            raise self.errors.pop(0)
        self.receipts.append(ack_line)
        return "recorded"

    def purge_acknowledged(self) -> list[str]:
        if self.errors:
            raise self.errors.pop(0)
        self.purges += 1
        return ["segments/000001.mp4"]


def test_the_spool_sits_beside_the_store_not_in_it(tmp_path: Path) -> None:
    assert spool_folder(tmp_path / "store") == tmp_path / "store.sync-spool"


def test_the_agent_is_asked_first_only_while_its_socket_exists(tmp_path: Path) -> None:
    agent, direct = Scripted(), Scripted()
    socket_path = tmp_path / "control.sock"
    chain = CustodyChain([("agent", agent), ("direct", direct)], available={"agent": socket_path})
    chain.record_receipt(b"a\n")
    socket_path.touch()
    chain.record_receipt(b"b\n")
    assert direct.receipts == [b"a\n"] and agent.receipts == [b"b\n"]


def test_a_busy_ledger_falls_through_and_a_refused_ack_does_not(tmp_path: Path) -> None:
    agent, direct = Scripted(LedgerError("agent gone")), Scripted()
    chain = CustodyChain([("agent", agent), ("direct", direct)])
    assert chain.record_receipt(b"x\n") == "recorded" and direct.receipts == [b"x\n"]
    refusing = CustodyChain([("agent", Scripted(VerificationError("bad ack"))), ("direct", direct)])
    with pytest.raises(VerificationError):
        refusing.record_receipt(b"y\n")
    assert direct.receipts == [b"x\n"]
    nobody = CustodyChain([("agent", Scripted(LedgerError("a"))), ("direct", Scripted(LedgerBusyError("b")))])
    with pytest.raises(LedgerError, match="agent: a; direct: b"):
        nobody.record_receipt(b"z\n")


def test_acks_the_custody_cannot_take_are_spooled_and_recorded_at_the_next_retry(tmp_path: Path) -> None:
    custody = Scripted(LedgerBusyError("agent holds the ledger"))
    spool = AckSpool(tmp_path / "spool")
    worker = ReceiptWorker(custody, spool)
    try:
        worker.submit(ack_line(7))
        assert worker.drain(5)
        assert [p.name.startswith("ack-000000000007-") for p in spool.pending()] == [True]
        assert (spool.pending()[0].stat().st_mode & 0o777) == 0o600
        worker.retry_spool()
        assert worker.drain(5)
    finally:
        worker.close()
    assert custody.receipts == [ack_line(7)] and spool.pending() == []
    assert (worker.stats.spooled, worker.stats.recorded) == (1, 1)


def test_a_spooled_ack_the_custody_refuses_is_set_aside(tmp_path: Path) -> None:
    spool = AckSpool(tmp_path / "spool")
    spool.put(ack_line(3), 3)
    worker = ReceiptWorker(Scripted(VerificationError("signature invalid")), spool)
    try:
        worker.retry_spool()
        assert worker.drain(5)
    finally:
        worker.close()
    assert spool.pending() == []
    assert [p.suffix for p in (tmp_path / "spool").iterdir()] == [".rejected"]


def test_held_work_waits_for_release_and_keeps_its_order(tmp_path: Path) -> None:
    custody: Custody = Scripted()
    worker = ReceiptWorker(custody, AckSpool(tmp_path / "spool"))
    try:
        worker.hold()
        worker.submit(ack_line(1))
        worker.request_purge()
        time.sleep(0.2)
        assert isinstance(custody, Scripted) and custody.receipts == [] and custody.purges == 0
        worker.release()
        assert worker.drain(5)
    finally:
        worker.close()
    assert custody.receipts == [ack_line(1)] and custody.purges == 1 and worker.stats.purged == 1


class Batching(Scripted):
    """A custody that takes several acks at once, as DirectCustody does; records each call's lines."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[bytes]] = []

    def record_receipts(self, ack_lines: list[bytes]) -> list[object]:
        self.calls.append(list(ack_lines))
        return [VerificationError("signature invalid") if line == ack_line(2) else "recorded" for line in ack_lines]


def test_acks_queued_together_are_recorded_in_one_call(tmp_path: Path) -> None:
    custody = Batching()
    worker = ReceiptWorker(custody, AckSpool(tmp_path / "spool"))
    try:
        worker.hold()
        for seq in (1, 2, 3):
            worker.submit(ack_line(seq))
        worker.release()
        assert worker.drain(5)
    finally:
        worker.close()
    assert custody.calls == [[ack_line(1), ack_line(2), ack_line(3)]]
    assert worker.stats.recorded == 2 and worker.stats.refused == 1
