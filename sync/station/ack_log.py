"""The station's log of its own acknowledgements, kept in each device's copy (``station-acks.jsonl``).

Why it exists: agent/evidence/archive.py (a copy that carries the station's signed acks proves what the
station held, and a ledger cut back below them shows). An ack is logged only when it says something the
log does not yet hold (a higher ``seq``, or a file not named before): a device that makes the station
repeat the same ack, as redeliveries and offers of stored files do, cannot make the log grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import RecordFormatError
from agent.evidence.ack import SignedAck, parse_ack
from sync.station.ports import LedgerCopies


@dataclass
class _Known:
    seq: int = 0
    files: set[str] = field(default_factory=set)  # sha256 of every file a logged ack names


class AckLog:
    def __init__(self, store: LedgerCopies) -> None:
        self._store = store
        self._known: dict[str, _Known] = {}
        self._pending: dict[str, list[SignedAck]] = {}

    def add(self, signed: SignedAck) -> None:
        """Queue an ack for :meth:`flush` when it is news (see the module docstring)."""
        ack = signed.ack
        known = self._known_for(ack.device)
        queued = self._pending.get(ack.device, [])
        seq = max([known.seq, *(q.ack.seq for q in queued)])
        named = known.files.union(*({f.sha256 for f in q.ack.files} for q in queued))
        if ack.seq > seq or any(f.sha256 not in named for f in ack.files):
            self._pending.setdefault(ack.device, []).append(signed)

    def discard(self) -> None:
        """Forget what was queued (the batch that signed it was rolled back)."""
        self._pending = {}

    def flush(self) -> None:
        """Append what was queued, durably (OSError, StoreError: nothing more may be sent)."""
        pending, self._pending = self._pending, {}
        for device, acks in pending.items():
            self._store.append_acks(device, [a.to_line() for a in acks])
            known = self._known[device]
            for signed in acks:
                known.seq = max(known.seq, signed.ack.seq)
                known.files.update(f.sha256 for f in signed.ack.files)

    def _known_for(self, device: str) -> _Known:
        known = self._known.get(device)
        if known is None:
            known = _Known()
            for raw in self._store.read_ack_log(device).splitlines(keepends=True):
                try:
                    signed = parse_ack(raw)
                except RecordFormatError:
                    continue  # a torn last line (a crash while writing it): that ack was never sent
                known.seq = max(known.seq, signed.ack.seq)
                known.files.update(f.sha256 for f in signed.ack.files)
            self._known[device] = known
        return known

