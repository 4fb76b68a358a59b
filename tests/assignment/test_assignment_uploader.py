"""The uploader's side: the inbox that keeps the newest valid assignment until the device takes it, and the
direct path that records it on the ledger when no agent runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key

from agent.errors import LedgerBusyError, LedgerError, RefusedError, VerificationError
from agent.evidence.assignment import Assignment, SignedAssignment, officer_state, sign_assignment
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.evidence.verify import verify_store
from firmware_config.device_config import parse_device_config
from sync.uploader.assignment import AssignmentChain, AssignmentInbox, DirectAssignment

DEVICE = "cam-0001"
STATION, IMPOSTOR, DEVICE_KEY = seeded_key(9), seeded_key(10), seeded_key(1)
T0 = 1_800_000_000_000_000


def assignment(officer: str, issued: int, serial: str, signer: DeviceKey = STATION) -> SignedAssignment:
    return sign_assignment(Assignment("station-1", STATION.fingerprint, DEVICE, officer, issued, serial), signer)


class FakePort:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.fail: Exception | None = None

    def assign(self, line: bytes) -> str:
        self.lines.append(line)
        if self.fail is not None:
            raise self.fail
        return "recorded"


def test_the_inbox_keeps_the_newest_valid_assignment_until_the_device_takes_it() -> None:
    port = FakePort()
    inbox = AssignmentInbox(device_id=DEVICE, station_key=STATION.public_key, port=port)
    inbox.deliver()
    assert port.lines == []
    # Forged, about another device, garbage: dropped, nothing handed on.
    inbox.offer(assignment("EVIL", T0, "e" * 32, signer=IMPOSTOR).to_line())
    inbox.offer(sign_assignment(Assignment("station-1", STATION.fingerprint, "cam-0002", "X", T0, "f" * 32),
                                STATION).to_line())
    inbox.offer(b"{}\tzz")
    assert inbox.pending is None

    first, later = assignment("B1", T0, "1" * 32), assignment("B2", T0 + 5, "2" * 32)
    inbox.offer(later.to_line())
    inbox.offer(first.to_line())  # arrives late: older than what is pending
    assert inbox.pending == later
    # A case is open: kept, asked again at the next pass; the agent away: kept too.
    port.fail = RefusedError("case cam-0001-00001 is open")
    inbox.deliver()
    port.fail = LedgerBusyError("held by the agent")
    inbox.deliver()
    assert inbox.pending == later and len(port.lines) == 2
    port.fail = None
    inbox.deliver()
    assert inbox.pending is None and inbox.outcomes == ["recorded"] and port.lines[-1] == later.to_line()
    # The retained message at the next connect: already settled, not handed on again.
    inbox.offer(later.to_line())
    inbox.deliver()
    assert len(port.lines) == 3
    # The device refuses it outright (it checks again): dropped, not retried.
    newest = assignment("B3", T0 + 9, "3" * 32)
    inbox.offer(newest.to_line())
    port.fail = VerificationError("signature invalid")
    inbox.deliver()
    inbox.deliver()
    assert inbox.pending is None and len(port.lines) == 4


def _config(tmp_path: Path) -> tuple[object, Path]:
    key_path = tmp_path / "device.key"
    key_path.write_bytes(DEVICE_KEY.private_pem())
    key_path.chmod(0o600)
    store = tmp_path / "store"
    config = parse_device_config({
        "device": {"id": DEVICE, "officer": "T0001", "store": str(store), "key": str(key_path)},
        "control_socket": {"path": str(tmp_path / "absent.sock")},
    }, "test-config")
    return config, store


def test_without_an_agent_the_assignment_is_recorded_on_the_ledger_directly(tmp_path: Path) -> None:
    config, store = _config(tmp_path)
    with Ledger.open(store, DEVICE_KEY, DEVICE, FakeClock()) as ledger:
        ledger.append("case-open", {"case_id": f"{DEVICE}-00001", "procedure": "inspection", "officer": "T0001"})
    chain = AssignmentChain(config, STATION.public_key)  # type: ignore[arg-type]
    line = assignment("B5678", T0, "1" * 32).to_line()
    ledger_path = store / "ledger.jsonl"
    before = ledger_path.read_bytes()
    with pytest.raises(RefusedError, match="is open"):
        chain.assign(line)
    with pytest.raises(VerificationError):
        chain.assign(assignment("EVIL", T0, "2" * 32, signer=IMPOSTOR).to_line())
    assert ledger_path.read_bytes() == before  # refused: not even a boot record

    with Ledger.open(store, DEVICE_KEY, DEVICE, FakeClock(wall_us=T0, mono_us=100_000_000)) as ledger:
        ledger.append("case-close", {"case_id": f"{DEVICE}-00001", "officer": "T0001", "missing": []})
        # While another writer (the agent) holds the ledger: busy, nothing written, tried again later.
        with pytest.raises(LedgerBusyError, match="held by the running agent"):
            DirectAssignment(config, STATION.public_key).assign(line)  # type: ignore[arg-type]
    assert "officer 'B5678' assigned (record seq" in chain.assign(line)
    records = read_records(store)
    state = officer_state((r.record.type, r.record.body) for r in records)
    assert state.current("T0001") == "B5678" and state.by == "station station-1"
    assert [r.record.body.get("reason") for r in records if r.record.type == "boot"][-1] == "officer assignment"
    # Again (the retained message at the next connect): nothing written.
    size = ledger_path.stat().st_size
    assert "already recorded" in chain.assign(line)
    assert ledger_path.stat().st_size == size
    assert verify_store(store, DEVICE_KEY.public_key).intact


def test_the_chain_asks_the_running_agent_first(tmp_path: Path) -> None:
    config, _store = _config(tmp_path)
    chain = AssignmentChain(config, STATION.public_key)  # type: ignore[arg-type]
    calls: list[str] = []
    chain.agent.assign = lambda line: calls.append("agent") or "agent took it"  # type: ignore[method-assign]
    chain.direct.assign = lambda line: calls.append("direct") or "direct took it"  # type: ignore[method-assign]
    assert chain.assign(b"x") == "direct took it"  # no socket file: no agent to ask
    chain.socket_path.touch()
    assert chain.assign(b"x") == "agent took it"
    assert calls == ["direct", "agent"]


def test_the_chain_falls_back_to_the_ledger_but_not_after_a_refusal(tmp_path: Path) -> None:
    config, _store = _config(tmp_path)
    chain = AssignmentChain(config, STATION.public_key)  # type: ignore[arg-type]
    chain.socket_path.touch()
    agent, direct = FakePort(), FakePort()
    chain.agent, chain.direct = agent, direct  # type: ignore[assignment]
    agent.fail = LedgerBusyError("agent stopping")
    assert chain.assign(b"x") == "recorded" and len(direct.lines) == 1  # the agent could not: the ledger then
    direct.fail = LedgerBusyError("held")
    with pytest.raises(LedgerError, match="assignment not recorded: agent: agent stopping; direct: held"):
        chain.assign(b"x")
    for refusal in (RefusedError("a case is open"), VerificationError("signature invalid")):
        agent.fail = refusal
        with pytest.raises(type(refusal)):
            chain.assign(b"x")
    assert len(direct.lines) == 2  # a refusal by the device is final: the ledger is not asked
