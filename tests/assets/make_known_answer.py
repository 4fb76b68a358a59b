"""Regenerate the known-answer stores in tests/assets/ (checked by tests/evidence/test_known_answer.py).

    .venv/bin/python tests/assets/make_known_answer.py

Every case folder is replaced: ``<case>/store/`` is a device store and ``<case>/expected.json`` is what
verifying it must give (intact, exit code, the first problem's text, every problem and note). The good
store's public key is in ``good/device.pub`` (PEM). The output is deterministic (fixed seed key, FakeClock,
deterministic Ed25519), so regenerating with unchanged code reproduces the committed files byte for byte,
except where the software version in the boot record changed. Regenerate only on purpose: a diff in a
committed store means the format changed and old evidence may no longer verify.

The good store: device "kat-0001", key seed 0x4b * 32, records
    1 boot, 2 segment 000001.bin, 3 segment 000002.bin, 4 event bookmark, 5 segment 000003.bin, 6 event end
with 2 KiB segments. Empty folders (quarantine/) are removed, as git would not keep them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
sys.path.insert(0, str(ASSETS.parent))  # tests/, for helpers.py

from helpers import FakeClock  # noqa: E402  (tests/helpers.py)

from agent.evidence.keys import DeviceKey, public_key_pem  # noqa: E402
from agent.evidence.ledger import Ledger  # noqa: E402
from agent.evidence.store import segment_file_name  # noqa: E402
from agent.evidence.verify import verify_store  # noqa: E402

DEVICE_ID = "kat-0001"
KEY_SEED = bytes([0x4B]) * 32
SEGMENT_BYTES = 2048
RECOVERY_BOOT_ID = "0b0c0000-0000-4000-8000-000000000002"
RECOVERY_WALL_US = 1_700_003_600_000_000  # the restart an hour after the first run


def kat_key() -> DeviceKey:
    return DeviceKey.from_seed(KEY_SEED)


def segment_data(index: int) -> bytes:
    return hashlib.shake_256(f"{DEVICE_ID}/known-answer/{index}".encode()).digest(SEGMENT_BYTES)


def build_good(store: Path) -> None:
    with Ledger.open(store, kat_key(), DEVICE_ID, clock=FakeClock(), boot_reason="known-answer") as ledger:
        for index in (1, 2, 3):
            stored = ledger.layout.write_segment(segment_file_name(index, "bin"), segment_data(index))
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
            if index == 2:
                ledger.append("event", {"kind": "bookmark"})
        ledger.append("event", {"kind": "end"})


def _lines(store: Path) -> list[bytes]:
    return (store / "ledger.jsonl").read_bytes().splitlines(keepends=True)


def _write_lines(store: Path, lines: list[bytes]) -> None:
    (store / "ledger.jsonl").write_bytes(b"".join(lines))


def tamper_body(store: Path) -> None:
    """seq 4's event kind "bookmark" becomes "Bookmark" (one byte); the signature no longer matches."""
    lines = _lines(store)
    assert b'"kind":"bookmark"' in lines[3]
    lines[3] = lines[3].replace(b'"kind":"bookmark"', b'"kind":"Bookmark"')
    _write_lines(store, lines)


def tamper_signature(store: Path) -> None:
    """One hex digit of seq 3's signature changes."""
    lines = _lines(store)
    at = lines[2].index(b"\t") + 1
    digit = lines[2][at : at + 1]
    lines[2] = lines[2][:at] + (b"1" if digit != b"1" else b"2") + lines[2][at + 1 :]
    _write_lines(store, lines)


def tamper_segment(store: Path) -> None:
    """One byte of segment 000002.bin (recorded by seq 3) flips."""
    path = store / "segments" / "000002.bin"
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)


def truncate_tail(store: Path) -> None:
    """The ledger ends in the middle of its last record (seq 6), as after a crash, not yet recovered."""
    lines = _lines(store)
    _write_lines(store, [*lines[:-1], lines[-1][: len(lines[-1]) // 2]])


def delete_record(store: Path) -> None:
    """Line 5 (seq 5, segment 000003.bin) is deleted; its segment file stays."""
    lines = _lines(store)
    del lines[4]
    _write_lines(store, lines)


def recover_tail(store: Path) -> None:
    """A torn tail, then a restart (a new boot): recovery quarantines it and records it. Still intact."""
    with (store / "ledger.jsonl").open("ab") as handle:
        handle.write(b'{"body":{"file":"segments/000004.bin","sha256":"')
    clock = FakeClock(wall_us=RECOVERY_WALL_US, boot_id=RECOVERY_BOOT_ID)
    with Ledger.open(store, kat_key(), DEVICE_ID, clock=clock, boot_reason="restart"):
        pass


CASES: dict[str, Callable[[Path], None] | None] = {
    "good": None,
    "tampered-body": tamper_body,
    "tampered-signature": tamper_signature,
    "tampered-segment": tamper_segment,
    "truncated-tail": truncate_tail,
    "deleted-record": delete_record,
    "recovered-tail": recover_tail,
}


def expected_outcome(store: Path) -> dict[str, object]:
    report = verify_store(store)
    problems = [str(p) for p in report.problems]
    return {
        "intact": report.intact,
        "exit_code": 0 if report.intact else 1,
        "first_problem": problems[0] if problems else None,
        "problems": problems,
        "notes": [str(n) for n in report.notes],
    }


def remove_empty_dirs(store: Path) -> None:
    for sub in ("segments", "quarantine"):
        folder = store / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def main() -> None:
    for name, tamper in CASES.items():
        case_dir = ASSETS / name
        if case_dir.exists():
            shutil.rmtree(case_dir)
        case_dir.mkdir()
        store = case_dir / "store"
        build_good(store)
        if tamper is not None:
            tamper(store)
        remove_empty_dirs(store)
        outcome = expected_outcome(store)
        (case_dir / "expected.json").write_text(json.dumps(outcome, indent=2) + "\n", encoding="ascii")
        print(f"{name}: intact={outcome['intact']} first problem: {outcome['first_problem']}")
    (ASSETS / "good" / "device.pub").write_text(public_key_pem(kat_key().public_key), encoding="ascii")


if __name__ == "__main__":
    main()
