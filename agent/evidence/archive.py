"""An archive copy versus a device's own store: what a purge record may excuse, and the station's signed log.

Two kinds of folder hold a ledger and its files, and they differ in one rule only:

* the device's own store (``--device-store``): a segment file may be gone after its signed ``purge``
  record (the station acknowledged it first; custody deletes it);
* an archive (the default): the station's copy ``DATA/devices/<id>``, or any copy made of it. Every file a
  record names must be present and intact, purged or not: the device's purge is exactly why this copy
  may be the only one left.

The mode is the operator's statement of what they verify, never read from the folder: a marker anyone can
delete must not turn an archive into a store that excuses missing files. The safe mode is the default,
and the verdict names the mode used. What the folder can prove is the other direction: the station
appends every acknowledgement it signs to ``station-acks.jsonl`` in the device's folder (durably, before
the ack is sent). A folder carrying it is a station copy, and ``--device-store`` on it is refused as a
problem. With the station's public ack key (``--station-key``) each line is checked: signed by that key,
about this device, its ``seq`` and ``link`` those of a record in this ledger (a ledger cut back below
what the station acknowledged shows), and each file it names vouched for by a record here (and so checked
as present and intact). The receipts in the ledger carry the station's acks too; with the key they are
checked as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, VerificationError
from agent.evidence.ack import SignedAck, parse_ack, verify_ack
from agent.evidence.keys import fingerprint, public_key_raw
from agent.evidence.store import label_of

if TYPE_CHECKING:
    from agent.evidence.verify import ChainVerifier

ARCHIVE = "archive"
DEVICE_STORE = "device-store"
MODES = (ARCHIVE, DEVICE_STORE)
# How an archive's problem for a file the device purged begins (verify.py), so a reader can point to the mode.
ARCHIVE_PURGED_MISSING = "file missing from this archive copy"
STATION_ACKS_FILE = "station-acks.jsonl"
MODE_WORDS = {
    ARCHIVE: "as an archive: every file a record names must be here, purged by the device or not",
    DEVICE_STORE: "as a device's own store: a file may be gone after its signed purge record",
}


def check_archive(chain: ChainVerifier, root: Path, mode: str, station_key: Ed25519PublicKey | None) -> None:
    """The checks that depend on the mode (see the module docstring); findings go into ``chain.report``."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: not one of {', '.join(MODES)}")
    chain.report.mode = mode
    if station_key is not None:
        chain.report.station_key_fingerprint = fingerprint(public_key_raw(station_key))
        _check_receipts(chain, station_key)
    path = root / STATION_ACKS_FILE
    if mode == DEVICE_STORE:
        if path.exists():
            chain.problem(f"this folder carries the station's signed acknowledgements ({STATION_ACKS_FILE}): it is "
                          "a station copy, where a purge record excuses no missing file; verify it without "
                          "--device-store", obj=STATION_ACKS_FILE)
        return
    if not path.exists():
        if station_key is not None:
            chain.problem(f"no {STATION_ACKS_FILE}: the station writes every acknowledgement it signs into its "
                          "copy; without it this copy cannot be shown to hold all the station acknowledged",
                          obj=STATION_ACKS_FILE)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        chain.problem(f"cannot read ({exc.strerror})", obj=STATION_ACKS_FILE)
        return
    _check_ack_log(chain, data, station_key)


def _check_receipts(chain: ChainVerifier, station_key: Ed25519PublicKey) -> None:
    own = fingerprint(public_key_raw(station_key))
    for seq, line, text in chain.receipts:
        try:
            signed = parse_ack(text.encode("ascii", "replace") + b"\n")
        except RecordFormatError as exc:
            chain.problem(f"receipt: the acknowledgement it carries does not parse ({exc})", seq, line=line)
            continue
        if signed.ack.key != own:
            chain.note(f"receipt: acknowledgement from another station key ({signed.ack.key[:16]}...), not checked",
                       seq, line=line)
            continue
        try:
            verify_ack(signed, station_key, str(chain.report.device))
        except VerificationError as exc:
            chain.problem(f"receipt: {exc}", seq, line=line)


def _check_ack_log(chain: ChainVerifier, data: bytes, station_key: Ed25519PublicKey | None) -> None:
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the log ends in LF
    highest = 0
    for number, raw in enumerate(lines, start=1):
        where = f"{STATION_ACKS_FILE} line {number}"
        try:
            signed = parse_ack(raw + b"\n")
            if station_key is not None:
                verify_ack(signed, station_key, str(chain.report.device))
        except (RecordFormatError, VerificationError) as exc:
            chain.problem(f"not a valid acknowledgement ({exc})", obj=where)
            continue
        highest = max(highest, signed.ack.seq)
        _check_ack_against_chain(chain, signed, where)
    if torn:
        chain.note("incomplete last line (a crash while the station wrote it: that ack was never sent)",
                   obj=f"{STATION_ACKS_FILE} line {len(lines) + 1}")
    checked = "signatures verified with the station key" if station_key is not None else (
        "consistent with this ledger, signatures not checked (pass --station-key to check them)")
    chain.note(f"{len(lines)} station acknowledgement(s), up to seq {highest}: {checked}", obj=STATION_ACKS_FILE)


def _check_ack_against_chain(chain: ChainVerifier, signed: SignedAck, where: str) -> None:
    ack = signed.ack
    if chain.report.device is not None and ack.device != chain.report.device:
        chain.problem(f"acknowledgement about device {ack.device!r}, not {chain.report.device!r}", obj=where)
        return
    if ack.seq > 0:
        link = chain.link_of(ack.seq)
        if link is None:
            chain.problem(f"the station acknowledged seq {ack.seq}, which this ledger copy does not hold (cut "
                          "back, or records removed)", ack.seq, where)
        elif link != ack.link:
            chain.problem(f"the station acknowledged seq {ack.seq} with another link than this ledger's record",
                          ack.seq, where)
    for item in ack.files:
        claim = chain.segments.get(item.file) or next(
            (c for c in chain.recoveries if c.name == item.file), None)
        if claim is None or claim.sha256 != item.sha256:
            chain.problem(f"acknowledged by the station (sha256 {item.sha256[:16]}...), but no record in this "
                          "copy vouches for it", ack.seq, label_of(item.file))
