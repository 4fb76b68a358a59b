"""The ledger writer: open, boot records, durable appends, torn-tail recovery, refusals; and the key file.

Everything here uses real files under tmp_path, real Ed25519 keys and real locks. The ENOSPC test mounts a
small tmpfs (root only) to get a genuine "No space left on device" from the kernel.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import KeyFileError, LedgerCorruptError, LedgerError
from agent.evidence.encoding import GENESIS_PREV, MAX_LINE_BYTES, record_link
from agent.evidence.keys import DeviceKey, load_device_key, load_or_create_device_key, verify_signature
from agent.evidence.ledger import Ledger
from agent.evidence.record import SignedRecord, parse_line
from agent.evidence.store import read_records
from agent.evidence.verify import verify_store

DEVICE = "dev-ledger-01"
PAGE = 4096


# --- small local helpers ---------------------------------------------------------------------------


def ledger_path(root: Path) -> Path:
    return root / "ledger.jsonl"


def read_ledger(root: Path) -> bytes:
    return ledger_path(root).read_bytes()


def records(root: Path) -> list[SignedRecord]:
    return [parse_line(line) for line in read_ledger(root).splitlines(keepends=True)]


def quarantine(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "quarantine").iterdir())


def torn_name(offset: int, torn: bytes) -> str:
    return f"ledger-torn-{offset}-{hashlib.sha256(torn).hexdigest()[:16]}.bin"


def make_ledger(root: Path, key: DeviceKey, events: int = 3, device: str = DEVICE) -> list[SignedRecord]:
    """A closed ledger: boot at seq 1, then ``events`` event records. Returns what was written."""
    written = []
    with Ledger.open(root, key, device) as ledger:
        assert ledger.boot_record is not None
        written.append(ledger.boot_record)
        for i in range(events):
            written.append(ledger.append("event", {"kind": "test", "n": i}))
    return written


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file in the store with its content (folders implied), to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flip_in_kind(line: bytes) -> bytes:
    """The same line with one letter of the event's ``kind`` value changed: parses, signature fails."""
    index = line.index(b'"kind":"test"') + len(b'"kind":"t')
    assert line[index : index + 1] == b"e"
    return line[:index] + b"E" + line[index + 1 :]


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "device" / "store"


# --- open, boot, append ----------------------------------------------------------------------------


def test_open_creates_store_and_writes_boot_record_at_seq_1(root: Path, key: DeviceKey) -> None:
    assert not root.exists()
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.boot_record is not None
        boot = ledger.boot_record
        assert ledger.head == (1, boot.link)
        assert ledger.recovery_records == []
    assert (root / "segments").is_dir()
    assert (root / "quarantine").is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["ledger.jsonl", "quarantine", "segments"]
    data = read_ledger(root)
    assert data == boot.to_line()
    assert data.count(b"\n") == 1
    (parsed,) = records(root)
    assert parsed.seq == 1
    assert parsed.record.type == "boot"
    assert parsed.record.prev == GENESIS_PREV
    assert parsed.record.device == DEVICE
    assert parsed.record.key == key.fingerprint
    assert parsed.record.body["public_key"] == key.public_raw.hex()
    assert parsed.record.body["reason"] == "first start"
    assert verify_signature(key.public_key, parsed.payload, parsed.signature)
    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    assert (report.records, report.first_seq, report.last_seq) == (1, 1, 1)


def test_reopen_writes_second_boot_record_linked_to_the_last(root: Path, key: DeviceKey) -> None:
    written = make_ledger(root, key, events=2)
    before = read_ledger(root)
    with Ledger.open(root, key, DEVICE, boot_reason="restart") as ledger:
        assert ledger.boot_record is not None
        boot = ledger.boot_record
    assert boot.seq == 4
    assert boot.record.prev == written[-1].link
    assert boot.record.body["reason"] == "restart"
    after = read_ledger(root)
    assert after == before + boot.to_line()  # the old records are untouched, the boot record appended
    assert [r.record.type for r in records(root)] == ["boot", "event", "event", "boot"]
    assert verify_store(root, key.public_key).intact


def test_append_returns_after_the_line_is_in_the_file(root: Path, key: DeviceKey) -> None:
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.boot_record is not None
        previous = ledger.boot_record
        for i in range(5):
            signed = ledger.append("event", {"kind": "test", "n": i})
            # Read the file through a separate descriptor: the whole line is there already.
            data = read_ledger(root)
            assert data.endswith(signed.to_line())
            assert data.count(b"\n") == i + 2
            assert signed.seq == previous.seq + 1
            assert signed.record.prev == previous.link
            assert signed.link == record_link(signed.payload)
            assert ledger.head == (signed.seq, signed.link)
            previous = signed
    assert [r.seq for r in records(root)] == [1, 2, 3, 4, 5, 6]


# --- torn tails ------------------------------------------------------------------------------------


def test_incomplete_last_line_is_quarantined_and_recorded(root: Path, key: DeviceKey) -> None:
    make_ledger(root, key, events=2)
    good = read_ledger(root)
    # A realistic torn tail: the first half of a real line for seq 4, as a short write leaves it.
    with Ledger.open(root, key, DEVICE) as ledger:
        full_line = ledger.append("event", {"kind": "test", "pad": "p" * 3000}).to_line()
    boot_line = records(root)[3].to_line()
    assert read_ledger(root) == good + boot_line + full_line
    torn = (boot_line + full_line)[: len(boot_line) + len(full_line) // 2]
    ledger_path(root).write_bytes(good + torn)
    offset = len(good) + len(boot_line)
    torn_bytes = torn[len(boot_line) :]
    assert not verify_store(root, key.public_key).intact  # an unrecovered torn tail is a problem

    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.boot_record is not None
        (recovery,) = ledger.recovery_records
        boot = ledger.boot_record

    name = torn_name(offset, torn_bytes)
    assert quarantine(root) == [name]
    qfile = root / "quarantine" / name
    assert qfile.read_bytes() == torn_bytes  # nothing deleted: the torn bytes are kept verbatim
    assert stat.S_IMODE(qfile.stat().st_mode) == 0o444
    assert boot.seq == 5 and boot.record.prev == records(root)[3].link  # chained to the last good record
    assert recovery.seq == 6 and recovery.record.type == "recovery"
    assert dict(recovery.record.body) == {
        "offset": offset,
        "length": len(torn_bytes),
        "sha256": hashlib.sha256(torn_bytes).hexdigest(),
        "file": f"quarantine/{name}",
        "reason": "incomplete last line",
    }
    assert recovery.record.prev == boot.link  # boot first, then what recovery found
    assert read_ledger(root) == good + boot_line + boot.to_line() + recovery.to_line()

    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    assert any(
        n.seq == 6 and f"torn ledger tail of {len(torn_bytes)} bytes at offset {offset}" in str(n) for n in report.notes
    ), report.notes


@pytest.mark.parametrize("where", ["payload", "signature"])
def test_complete_but_invalid_last_line_is_treated_as_torn_tail(root: Path, key: DeviceKey, where: str) -> None:
    written = make_ledger(root, key, events=3)
    last = written[-1].to_line()
    good = read_ledger(root)[: -len(last)]
    if where == "payload":
        bad = flip_in_kind(last)
    else:
        sig_start = len(written[-1].payload) + 1
        digit = last[sig_start : sig_start + 1]
        bad = last[:sig_start] + (b"1" if digit != b"1" else b"2") + last[sig_start + 1 :]
    assert bad != last and bad.endswith(b"\n") and len(bad) == len(last)
    ledger_path(root).write_bytes(good + bad)

    with Ledger.open(root, key, DEVICE) as ledger:
        (recovery,) = ledger.recovery_records
        boot = ledger.boot_record
        assert boot is not None
    name = torn_name(len(good), bad)
    assert quarantine(root) == [name]
    assert (root / "quarantine" / name).read_bytes() == bad
    assert boot.seq == written[-1].seq  # the bad record's place is taken by the new boot record
    assert boot.record.prev == written[-2].link
    assert recovery.seq == boot.seq + 1 and recovery.record.prev == boot.link
    assert recovery.record.body["offset"] == len(good)
    assert recovery.record.body["length"] == len(bad)
    assert str(recovery.record.body["reason"]).startswith("last line fails verification")
    assert read_ledger(root).startswith(good + boot.to_line() + recovery.to_line())
    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    assert any("torn ledger tail" in str(n) for n in report.notes)


def test_damage_before_an_invalid_last_line_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    written = make_ledger(root, key, events=4)
    lines = [r.to_line() for r in written]
    lines[-2] = flip_in_kind(lines[-2])  # the record before the last one: not a crash artifact
    lines[-1] = flip_in_kind(lines[-1])
    ledger_path(root).write_bytes(b"".join(lines))
    before = snapshot(root)
    damaged_at = sum(len(x) for x in lines[:-2])
    with pytest.raises(LedgerCorruptError, match=rf"damage at offset {damaged_at} \(signature invalid\)"):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before
    assert quarantine(root) == []


def test_invalid_line_followed_by_incomplete_line_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    written = make_ledger(root, key, events=3)
    lines = [r.to_line() for r in written]
    lines[-1] = flip_in_kind(lines[-1])
    ledger_path(root).write_bytes(b"".join(lines) + b'{"body":{"kind":"tor')
    before = snapshot(root)
    with pytest.raises(LedgerCorruptError, match=rf"damage at offset {sum(len(x) for x in lines[:-1])} "):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before


def test_damaged_line_before_an_incomplete_tail_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    written = make_ledger(root, key, events=3)
    lines = [r.to_line() for r in written]
    lines[-1] = lines[-1][:10] + b"\x00" + lines[-1][11:]  # unparseable, but complete
    ledger_path(root).write_bytes(b"".join(lines) + b'{"body":{"kind":"tor')
    before = snapshot(root)
    with pytest.raises(LedgerCorruptError, match="is not a torn tail"):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before


def test_damage_further_back_is_left_for_the_verifier(root: Path, key: DeviceKey) -> None:
    """docs/ledger-format.md section 8: the writer checks only the tail; older damage stays visible."""
    written = make_ledger(root, key, events=4)
    lines = [r.to_line() for r in written]
    lines[2] = flip_in_kind(lines[2])  # seq 3
    damaged = b"".join(lines)
    ledger_path(root).write_bytes(damaged)
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.recovery_records == []
    assert read_ledger(root).startswith(damaged)  # not repaired, only appended to
    report = verify_store(root, key.public_key)
    assert [(p.seq, p.message) for p in report.problems] == [(3, "signature invalid")]


def test_unterminated_region_longer_than_one_record_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    make_ledger(root, key, events=1)
    good = read_ledger(root)
    ledger_path(root).write_bytes(good + b"x" * (MAX_LINE_BYTES + 1))
    before = snapshot(root)
    with pytest.raises(LedgerCorruptError, match=rf"damage at offset {len(good)} .*longer than one record"):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before


def test_overlong_complete_last_line_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    make_ledger(root, key, events=1)
    good = read_ledger(root)
    ledger_path(root).write_bytes(good + b"y" * (MAX_LINE_BYTES + 10) + b"\n")
    before = snapshot(root)
    with pytest.raises(LedgerCorruptError, match=rf"damage at offset {len(good)} "):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before


def test_torn_first_record_recovers_to_a_verifiable_ledger(root: Path, key: DeviceKey) -> None:
    """A crash while writing the very first boot record: the store must still verify after reopening."""
    boot_line = make_ledger(root, key, events=0)[0].to_line()
    torn = boot_line[: len(boot_line) // 3]
    ledger_path(root).write_bytes(torn)
    with Ledger.open(root, key, DEVICE) as ledger:
        (recovery,) = ledger.recovery_records
        assert ledger.boot_record is not None
        boot = ledger.boot_record
    assert quarantine(root) == [torn_name(0, torn)]
    assert recovery.record.body["offset"] == 0 and recovery.record.body["length"] == len(torn)
    parsed = records(root)
    assert parsed[0].seq == 1 and parsed[0].record.type == "boot"  # a ledger starts with a boot record
    assert parsed[0] == boot and boot.record.body["reason"] == "first start"
    assert [r.record.type for r in parsed] == ["boot", "recovery"]
    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    # Without a pinned key too: the first boot record announces it.
    assert verify_store(root).intact


def test_torn_first_record_cut_before_its_recovery_record(root: Path, key: DeviceKey) -> None:
    """As above, but the crash came after the cut: an empty ledger and an unrecorded quarantine file."""
    boot_line = make_ledger(root, key, events=0)[0].to_line()
    torn = boot_line[:100]
    ledger_path(root).write_bytes(b"")
    _write_quarantine(root, torn_name(0, torn), torn)
    with Ledger.open(root, key, DEVICE) as ledger:
        (recovery,) = ledger.recovery_records
    assert [r.record.type for r in records(root)] == ["boot", "recovery"]
    assert recovery.seq == 2 and recovery.record.body["offset"] == 0
    assert recovery.record.body["reason"] == "torn tail found at open"
    assert verify_store(root, key.public_key).intact


# --- identity and locking --------------------------------------------------------------------------


def test_ledger_of_another_key_is_refused_naming_both_fingerprints(root: Path, key: DeviceKey) -> None:
    make_ledger(root, key, events=2)
    before = snapshot(root)
    other = DeviceKey.generate()
    with pytest.raises(LedgerError) as caught:
        Ledger.open(root, other, DEVICE)
    assert not isinstance(caught.value, LedgerCorruptError)
    message = str(caught.value)
    assert key.fingerprint[:16] in message
    assert other.fingerprint[:16] in message
    assert "seq 3" in message
    assert snapshot(root) == before


def test_ledger_of_another_device_is_refused(root: Path, key: DeviceKey) -> None:
    make_ledger(root, key, events=1)
    before = snapshot(root)
    with pytest.raises(LedgerError, match=rf"belongs to device '{DEVICE}', not 'dev-other'"):
        Ledger.open(root, key, "dev-other")
    assert snapshot(root) == before


def test_second_open_in_the_same_process_is_refused(root: Path, key: DeviceKey) -> None:
    with Ledger.open(root, key, DEVICE) as first:
        before = read_ledger(root)
        with pytest.raises(LedgerError, match="in use by another process"):
            Ledger.open(root, key, DEVICE)
        assert read_ledger(root) == before
        first.append("event", {"kind": "still-writable"})  # the holder is unaffected
    with Ledger.open(root, key, DEVICE) as again:  # released on close
        assert again.head[0] == 3


def test_open_while_another_process_holds_the_ledger_is_refused(root: Path, key: DeviceKey, tmp_path: Path) -> None:
    key_file = tmp_path / "id" / "device.key"
    key_file.parent.mkdir(mode=0o700)
    key_file.write_bytes(key.private_pem())
    key_file.chmod(0o600)
    child = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from agent.evidence.keys import load_device_key
        from agent.evidence.ledger import Ledger
        with Ledger.open(Path(sys.argv[1]), load_device_key(Path(sys.argv[2])), sys.argv[3]):
            print("ready", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(root), str(key_file), DEVICE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        before = read_ledger(root)
        with pytest.raises(LedgerError, match="in use by another process"):
            Ledger.open(root, key, DEVICE)
        assert read_ledger(root) == before
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.head[0] == 2


# --- crashes inside recovery -----------------------------------------------------------------------


def _torn_store(root: Path, key: DeviceKey) -> tuple[bytes, bytes]:
    make_ledger(root, key, events=2)
    good = read_ledger(root)
    torn = b'{"body":{"kind":"test","pad":"' + b"q" * 500
    ledger_path(root).write_bytes(good + torn)
    return good, torn


def _write_quarantine(root: Path, name: str, data: bytes) -> None:
    path = root / "quarantine" / name
    path.write_bytes(data)
    path.chmod(0o444)


def test_crash_between_quarantine_copy_and_cut_is_idempotent(root: Path, key: DeviceKey) -> None:
    good, torn = _torn_store(root, key)
    name = torn_name(len(good), torn)
    _write_quarantine(root, name, torn)  # the copy was made; the cut and the record were not
    with Ledger.open(root, key, DEVICE) as ledger:
        (recovery,) = ledger.recovery_records
        boot = ledger.boot_record
        assert boot is not None
    assert quarantine(root) == [name]
    assert (root / "quarantine" / name).read_bytes() == torn
    assert recovery.record.body["offset"] == len(good)
    assert recovery.record.body["length"] == len(torn)
    assert recovery.record.body["file"] == f"quarantine/{name}"
    assert read_ledger(root).startswith(good + boot.to_line() + recovery.to_line())
    types = [r.record.type for r in records(root)]
    assert types == ["boot", "event", "event", "boot", "recovery"]
    assert verify_store(root, key.public_key).intact
    # Opening again finds nothing to recover and records nothing twice.
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.recovery_records == []
    assert [r.record.type for r in records(root)].count("recovery") == 1
    assert verify_store(root, key.public_key).intact


def test_quarantine_name_taken_by_other_content_is_refused_unchanged(root: Path, key: DeviceKey) -> None:
    good, torn = _torn_store(root, key)
    _write_quarantine(root, torn_name(len(good), torn), b"someone else's bytes")
    before = snapshot(root)
    with pytest.raises(LedgerCorruptError, match="exists with other content"):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == before


def test_crash_after_cut_before_recovery_record_records_it_at_next_open(root: Path, key: DeviceKey) -> None:
    good, torn = _torn_store(root, key)
    name = torn_name(len(good), torn)
    _write_quarantine(root, name, torn)
    ledger_path(root).write_bytes(good)  # cut done, recovery record not written
    report = verify_store(root, key.public_key)
    assert [str(p) for p in report.problems] == [f"quarantine/{name}: no record covers this file"]
    with Ledger.open(root, key, DEVICE) as ledger:
        (recovery,) = ledger.recovery_records
        boot = ledger.boot_record
        assert boot is not None
        assert recovery.seq == boot.seq + 1
    assert recovery.seq == 5
    assert dict(recovery.record.body) == {
        "offset": len(good),
        "length": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "file": f"quarantine/{name}",
        "reason": "torn tail found at open",
    }
    assert read_ledger(root).startswith(good + boot.to_line() + recovery.to_line())
    assert (root / "quarantine" / name).read_bytes() == torn
    assert verify_store(root, key.public_key).intact
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.recovery_records == []


# --- refused appends -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_type", "body", "reason"),
    [
        ("event", {"kind": "x", "ratio": 0.5}, "floats are not allowed"),
        ("event", {"kind": "x", "big": 2**53}, "outside"),
        ("event", {"kind": "x", "Bad-Key": 1}, "is not"),
        ("event", {"other": "no kind"}, "'kind' is missing"),
        ("segment", {"file": "segments/000001.bin", "size": 1}, "'sha256' is missing"),
        ("segment", {"file": "segments/000001.bin", "sha256": "0" * 64, "size": -1}, "'size' has a wrong value"),
        ("segment", {"file": "segments/000001.bin", "sha256": "0" * 64, "size": True}, "'size' has a wrong value"),
        ("segment", {"file": "segments/000001.bin", "sha256": "AB" * 32, "size": 1}, "'sha256' has a wrong value"),
        ("segment", {"file": "segments/../ledger.jsonl", "sha256": "0" * 64, "size": 1}, "'file' has a wrong value"),
        ("segment", {"file": "../segments/000001.bin", "sha256": "0" * 64, "size": 1}, "'file' has a wrong value"),
        ("purge", {"file": "segments/..", "sha256": "0" * 64, "reason": "x"}, "'file' has a wrong value"),
        ("segment", {"file": "/etc/passwd", "sha256": "0" * 64, "size": 1}, "'file' has a wrong value"),
        ("telemetry", {"kind": "x"}, "unknown record type 'telemetry'"),
        ("event", {"kind": "x", "pad": "z" * MAX_LINE_BYTES}, "line too long"),
    ],
)
def test_append_refuses_bad_records_and_writes_nothing(
    root: Path, key: DeviceKey, record_type: str, body: dict[str, object], reason: str
) -> None:
    with Ledger.open(root, key, DEVICE) as ledger:
        ledger.append("event", {"kind": "first"})
        before = read_ledger(root)
        head = ledger.head
        with pytest.raises(LedgerError, match=rf"refusing {record_type} record seq 3: .*{reason}"):
            ledger.append(record_type, body)
        assert read_ledger(root) == before
        assert ledger.head == head
        # A refused record does not close the ledger: the next good one takes the same seq.
        assert ledger.append("event", {"kind": "after"}).seq == 3
    assert verify_store(root, key.public_key).intact


# --- a real ENOSPC ---------------------------------------------------------------------------------


def _fill(path: Path) -> None:
    """Write to ``path`` until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def test_failed_write_closes_the_ledger_and_reopen_recovers(small_fs: Path, key: DeviceKey) -> None:
    root = small_fs / "store"
    ledger = Ledger.open(root, key, DEVICE)
    try:
        ledger.append("event", {"kind": "before-full"})
        while len(read_ledger(root)) % PAGE == 0:  # keep room in the last page so the write tears
            ledger.append("event", {"kind": "pad"})
        filler = small_fs / "filler"
        _fill(filler)
        before = read_ledger(root)
        room = -len(before) % PAGE
        seq = ledger.head[0] + 1
        with pytest.raises(LedgerError, match=rf"append of seq {seq} failed \(No space left on device\)"):
            ledger.append("event", {"kind": "too-big", "pad": "w" * 20000})
        after = read_ledger(root)
        assert after.startswith(before)
        torn = after[len(before) :]
        # The kernel took what fit in the file's last page: a torn tail, no LF.
        assert 0 < len(torn) <= room and b"\n" not in torn
        with pytest.raises(LedgerError, match=rf"closed after a failed write of seq {seq}"):
            ledger.append("event", {"kind": "small"})
        assert read_ledger(root) == after
    finally:
        ledger.close()

    # Still full: reopening must fail cleanly (a LedgerError, not a raw OSError) and change nothing.
    still = snapshot(root)
    with pytest.raises(LedgerError, match="No space left on device"):
        Ledger.open(root, key, DEVICE)
    assert snapshot(root) == still

    filler.unlink()
    with Ledger.open(root, key, DEVICE) as reopened:
        (recovery,) = reopened.recovery_records
        assert recovery.seq == seq + 1  # the new boot record takes the torn record's place
        reopened.append("event", {"kind": "after-recovery"})
    assert dict(recovery.record.body) == {
        "offset": len(before),
        "length": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "file": f"quarantine/{torn_name(len(before), torn)}",
        "reason": "incomplete last line",
    }
    assert (root / "quarantine" / torn_name(len(before), torn)).read_bytes() == torn
    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    assert [r.record.type for r in records(root)][-3:] == ["boot", "recovery", "event"]


# --- the device key file ---------------------------------------------------------------------------


def test_key_is_created_0600_in_a_0700_folder_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "identity" / "device.key"
    old_umask = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        created = load_or_create_device_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == ["device.key"]  # no temporary file left
    content = path.read_bytes()
    assert load_or_create_device_key(path).fingerprint == created.fingerprint
    assert load_device_key(path).fingerprint == created.fingerprint
    assert path.read_bytes() == content  # loading never rewrites the key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    load_or_create_device_key(path)
    content = path.read_bytes()
    path.chmod(mode)
    for load in (load_device_key, load_or_create_device_key):
        with pytest.raises(KeyFileError) as caught:
            load(path)
        message = str(caught.value)
        assert str(path) in message and f"mode {mode:04o}" in message and "must be 0600" in message
    assert path.read_bytes() == content  # refused, never replaced


def test_owner_only_modes_other_than_0600_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    fp = load_or_create_device_key(path).fingerprint
    path.chmod(0o400)
    assert load_device_key(path).fingerprint == fp


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"garbage, not a key\n", "not an unencrypted PEM private key"),
        (b"", "not an unencrypted PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an unencrypted PEM private key"),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "not an Ed25519 key",
        ),
    ],
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(content)
    path.chmod(0o600)
    for load in (load_device_key, load_or_create_device_key):
        with pytest.raises(KeyFileError, match=reason) as caught:
            load(path)
        assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_missing_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "device.key"
    with pytest.raises(KeyFileError, match=rf"key file {path}: not found"):
        load_device_key(path)
    assert not path.parent.exists()


def test_device_key_repr_hides_the_private_key(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    pem = key.private_pem()
    shown = repr(key) + str(key) + f"{key!r}"
    assert "PRIVATE" not in shown
    for line in pem.decode().splitlines()[1:-1]:
        assert line not in shown
    raw_private = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert raw_private.hex() not in shown and raw_private.hex()[:16] not in shown
    assert key.fingerprint[:16] in shown


def test_read_records_skips_damaged_lines_so_a_device_still_starts(root: Path, key: DeviceKey) -> None:
    """The workflow replays the ledger at start: one damaged record must not keep the camera off."""
    written = make_ledger(root, key, events=4)
    lines = [r.to_line() for r in written]
    lines[2] = lines[2][:20] + b"\x00" + lines[2][21:]  # seq 3 unparseable
    ledger_path(root).write_bytes(b"".join(lines))
    assert [r.seq for r in read_records(root)] == [1, 2, 4, 5]
    with Ledger.open(root, key, DEVICE) as ledger:  # the writer checks only the tail: it opens and appends
        assert ledger.head[0] == 6
    assert [p.line for p in verify_store(root, key.public_key).problems] == [3]  # the verifier reports it
