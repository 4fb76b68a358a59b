"""Known answers: committed stores verify exactly as recorded, and the record encoding and signatures never drift.

The stores under tests/assets/ are made by tests/assets/make_known_answer.py; each has an expected.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.encoding import record_link
from agent.evidence.keys import (
    DeviceKey,
    fingerprint,
    load_public_key,
    public_key_from_hex,
    public_key_raw,
    verify_signature,
)
from agent.evidence.record import Record, SignedRecord, parse_line
from agent.evidence.verify import verify_store
from agent.verify_cli import main

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GOOD = ASSETS / "good"
KAT_SEED = bytes([0x4B]) * 32
KAT_PUBLIC_KEY_HEX = "7ea0e3bd52e207c9d3b0eba65c0704e66fca2d8e165a175218b174fc4160e413"
KAT_FINGERPRINT = "5b41b304dfd6052c9b4d16e8dbb98ca134b28a418b5508bd38f994d0fc4cb032"
KEY_NOTE = "seq 1: device key taken from this boot record (not pinned; pass --pubkey to pin it)"

# The first problem of each committed store, written here as well so that a regenerated expected.json
# that silently changed its answer is caught.
FIRST_PROBLEMS: dict[str, str | None] = {
    "good": None,
    "recovered-tail": None,
    "tampered-body": "seq 4: signature invalid",
    "tampered-signature": "seq 3: signature invalid",
    "tampered-segment": "seq 3: segment 000002.bin: sha256 mismatch",
    "truncated-tail": "ledger.jsonl line 6: incomplete record at the end of the ledger (torn tail not yet recovered)",
    "deleted-record": "seq 6: records missing before this one (seq 5)",
}


def expected(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ASSETS / case / "expected.json").read_text(encoding="ascii"))
    return data


def test_every_committed_case_is_listed() -> None:
    committed = sorted(p.parent.name for p in ASSETS.glob("*/expected.json"))
    assert committed == sorted(FIRST_PROBLEMS)


@pytest.mark.parametrize("case", sorted(FIRST_PROBLEMS))
def test_committed_store_verifies_as_expected(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    want = expected(case)
    assert want["first_problem"] == FIRST_PROBLEMS[case]
    assert want["intact"] is (FIRST_PROBLEMS[case] is None)

    report = verify_store(ASSETS / case / "store")
    assert report.intact is want["intact"]
    assert [str(p) for p in report.problems] == want["problems"]
    assert [str(n) for n in report.notes] == want["notes"]
    assert (str(report.problems[0]) if report.problems else None) == want["first_problem"]
    assert report.device == "kat-0001"
    assert report.key_fingerprint == KAT_FINGERPRINT

    code = main([str(ASSETS / case / "store"), "--json"])
    assert code == want["exit_code"] == (0 if want["intact"] else 1)
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["intact"] is want["intact"]
    assert [p["text"] for p in parsed["problems"]] == want["problems"]


@pytest.mark.parametrize("case", sorted(FIRST_PROBLEMS))
def test_committed_store_with_pinned_key_finds_the_same_problems(case: str) -> None:
    want = expected(case)
    report = verify_store(ASSETS / case / "store", load_public_key(GOOD / "device.pub"))
    assert report.key_pinned
    assert [str(p) for p in report.problems] == want["problems"]
    # Pinned, the key is no longer taken from the boot record; every other note stays.
    assert [str(n) for n in report.notes] == [n for n in want["notes"] if n != KEY_NOTE]


def test_good_store_details() -> None:
    report = verify_store(GOOD / "store")
    assert (report.records, report.first_seq, report.last_seq) == (6, 1, 6)
    assert (report.segments, report.segment_bytes) == (3, 3 * 2048)


def test_recovered_tail_store_reports_its_recovery() -> None:
    notes = expected("recovered-tail")["notes"]
    assert notes[1] == (
        "seq 8: quarantine/ledger-torn-3079-01cc6caae75f0a34.bin: torn ledger tail of 48 bytes at offset 3079 "
        "was moved aside at recovery (incomplete last line)"
    )
    assert verify_store(ASSETS / "recovered-tail" / "store").last_seq == 8


def test_committed_public_key_pins(capsys: pytest.CaptureFixture[str]) -> None:
    public_key = load_public_key(GOOD / "device.pub")
    assert public_key_raw(public_key).hex() == KAT_PUBLIC_KEY_HEX
    assert fingerprint(public_key_raw(public_key)) == KAT_FINGERPRINT
    assert DeviceKey.from_seed(KAT_SEED).public_raw.hex() == KAT_PUBLIC_KEY_HEX

    report = verify_store(GOOD / "store", public_key)
    assert report.intact and report.key_pinned and report.key_fingerprint == KAT_FINGERPRINT
    assert report.notes == []

    assert main([str(GOOD / "store"), "--pubkey", str(GOOD / "device.pub")]) == 0
    assert f"device kat-0001  key {KAT_FINGERPRINT[:16]}... (pinned)" in capsys.readouterr().out


def test_committed_store_fails_against_another_key(tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_text(DeviceKey.from_seed(bytes([0x4C]) * 32).public_raw.hex(), encoding="ascii")
    assert main([str(GOOD / "store"), "--pubkey", str(other)]) == 1
    report = verify_store(GOOD / "store", load_public_key(other))
    assert str(report.problems[0]).startswith(f"seq 1: signed by another key ({KAT_FINGERPRINT[:16]}...")


# --- encoding stability: a fixed record encodes and signs to exactly these bytes -----------------------

EVENT_RECORD = Record(
    seq=41,
    prev="a" * 64,
    type="event",
    device="kat-0001",
    key=KAT_FINGERPRINT,
    wall_us=1_700_000_041_000_000,
    mono_us=41_000_000,
    boot="0b0c0000-0000-4000-8000-000000000001",
    body={
        "kind": "note",
        "text": 'Straße ✓ "quoted"\ttab',
        "tags": ["a", 2, True, None, -7],
        "nested": {"z": 1, "a": []},
    },
)
EVENT_PAYLOAD = (
    rb'{"body":{"kind":"note","nested":{"a":[],"z":1},"tags":["a",2,true,null,-7],'
    rb'"text":"Stra\u00dfe \u2713 \"quoted\"\ttab"},"boot":"0b0c0000-0000-4000-8000-000000000001",'
    rb'"device":"kat-0001","key":"5b41b304dfd6052c9b4d16e8dbb98ca134b28a418b5508bd38f994d0fc4cb032",'
    rb'"mono_us":41000000,"prev":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",'
    rb'"seq":41,"type":"event","v":1,"wall_us":1700000041000000}'
)
EVENT_SIGNATURE = (
    "786437d5149cc20650bc238286eb9f30d3e66e0b01333323a70d1d3d631d379a"
    "3aa56aa7691e438d344f354c2698a01874ddb71d55e39b61d3ca38c9ca14f909"
)
EVENT_LINK = "016d1fea9dd64b2402eff5d6be57e290fc6203d93675ca315a6d5e1d7af11eb2"

SEGMENT_RECORD = Record(
    seq=42,
    prev=EVENT_LINK,
    type="segment",
    device="kat-0001",
    key=KAT_FINGERPRINT,
    wall_us=1_700_000_042_000_000,
    mono_us=42_000_000,
    boot="0b0c0000-0000-4000-8000-000000000001",
    body={
        "file": "segments/000041.mp4",
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "size": 0,
    },
)
SEGMENT_PAYLOAD = (
    b'{"body":{"file":"segments/000041.mp4","sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",'
    b'"size":0},"boot":"0b0c0000-0000-4000-8000-000000000001","device":"kat-0001",'
    b'"key":"5b41b304dfd6052c9b4d16e8dbb98ca134b28a418b5508bd38f994d0fc4cb032","mono_us":42000000,'
    b'"prev":"016d1fea9dd64b2402eff5d6be57e290fc6203d93675ca315a6d5e1d7af11eb2","seq":42,"type":"segment","v":1,'
    b'"wall_us":1700000042000000}'
)
SEGMENT_SIGNATURE = (
    "0b0ec8cfb8942f5caa07a2486cb976e7f548b9d7eacb0a7e99465a7fa4cfa731"
    "f5af84b4f06495b57f33db13c1ebfc0f67cf68a013af4bb081459fa35acfff0a"
)
SEGMENT_LINK = "9fed4ed3a9f48a5d03a20ad80a44d312114eabd5c870e3f2daf26368045c714f"


@pytest.mark.parametrize(
    ("record", "payload", "signature", "link"),
    [
        pytest.param(EVENT_RECORD, EVENT_PAYLOAD, EVENT_SIGNATURE, EVENT_LINK, id="event-all-value-kinds"),
        pytest.param(SEGMENT_RECORD, SEGMENT_PAYLOAD, SEGMENT_SIGNATURE, SEGMENT_LINK, id="segment"),
    ],
)
def test_fixed_record_encodes_and_signs_to_known_bytes(
    record: Record, payload: bytes, signature: str, link: str
) -> None:
    key = DeviceKey.from_seed(KAT_SEED)
    assert key.fingerprint == KAT_FINGERPRINT
    assert record.to_payload() == payload
    assert key.sign(payload).hex() == signature
    assert record_link(payload) == link

    line = SignedRecord(record, payload, bytes.fromhex(signature)).to_line()
    assert line == payload + b"\t" + signature.encode("ascii") + b"\n"
    parsed = parse_line(line)
    assert parsed.record == record and parsed.payload == payload and parsed.link == link
    assert verify_signature(public_key_from_hex(KAT_PUBLIC_KEY_HEX), payload, bytes.fromhex(signature))
