"""The station's acknowledgements, as the uploader judges them before the custody records them.

An ack counts only when its signature is the provisioned station key's, it is about this device, and its
``link`` is the link of this device's own record ``seq``. A bad ack is logged and changes nothing: no
progress, no receipt, no purge. A good one moves the uploader's idea of what the station holds and goes to
the receipt worker (which the custody checks again before it writes anything).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, StoreError, VerificationError
from agent.evidence.ack import SignedAck, parse_ack, verify_ack
from sync.uploader.custody_port import ReceiptWorker
from sync.uploader.ledger_view import LedgerView

log = logging.getLogger(__name__)
PARKED_AFTER = 2


@dataclass
class UploadState:
    """What the uploader knows the station holds; kept across the sessions of one run."""

    station_seq: int = -1  # chain position the station holds (-1: not asked yet this run)
    acked_sha256: set[str] = field(default_factory=set)  # files named in valid acks this run
    # Files that could not be sent (unreadable here, or refused by the station): file -> (why, sessions). They
    # are offered again in later sessions; after PARKED_AFTER failed sessions they no longer start one by
    # themselves (no hot loop over a damaged file) and ``--once`` gives up on them.
    troubled: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Set when the station's copy and this ledger disagree (a rollback or a fork): waiting cannot mend it.
    disagreement: str | None = None

    def note_failures(self, failed: dict[str, str]) -> None:
        for name, reason in failed.items():
            self.troubled[name] = (reason, self.troubled.get(name, ("", 0))[1] + 1)

    def parked(self, name: str) -> bool:
        return self.troubled.get(name, ("", 0))[1] >= PARKED_AFTER


class AckHandler:
    def __init__(self, *, device_id: str, station_key: Ed25519PublicKey, view: LedgerView, state: UploadState,
                 worker: ReceiptWorker) -> None:
        self.device_id = device_id
        self.station_key = station_key
        self.view = view
        self.state = state
        self.worker = worker

    def handle(self, payload: bytes) -> SignedAck | None:
        """Judge one ``down/ack`` message; the ack when it is valid (and handed to the custody), else None."""
        try:
            signed = parse_ack(payload)
            verify_ack(signed, self.station_key, self.device_id)
        except (RecordFormatError, VerificationError) as exc:
            log.error("station ack refused: %s; nothing recorded", exc)
            return None
        ack = signed.ack
        if ack.seq > self.view.head[0]:
            try:
                self.view.refresh()  # a record appended since the session began may be what it names
            except StoreError as exc:
                log.error("ack for seq %d not checked: %s", ack.seq, exc)
                return None
        if self.view.link_of(ack.seq) != ack.link:
            log.error("station acknowledged seq %d with a link this ledger does not have; ack from station %r "
                      "ignored, nothing recorded", ack.seq, ack.station)
            return None
        self.state.station_seq = max(self.state.station_seq, ack.seq)
        self.state.acked_sha256.update(f.sha256 for f in ack.files)
        self.worker.submit(payload if payload.endswith(b"\n") else payload + b"\n")
        return signed
