"""Custody on the device (issue 5, SPEC invariant 3): receipts from signed station acks, and purges.

Real stores under tmp_path (the real ledger, stand-in segment files), acks signed with a seeded station key
through agent.evidence.ack.sign_ack, time from a FakeClock that the test moves forward.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from custody_support import DEVICE, HOUR_US, IMPOSTOR, KEY, STATION, ack_of, flip_byte
from helpers import FakeClock, stand_in_segment

from agent.errors import LedgerBusyError, VerificationError
from agent.evidence.ack import Ack, AckedFile, SignedAck, sign_ack
from agent.evidence.archive import DEVICE_STORE
from agent.evidence.custody import (
    DirectCustody,
    RetentionPolicy,
    acknowledged,
    long_term_files,
    purge_candidates,
    receipt_news,
    record_receipt,
    run_purge,
)
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.record import SignedRecord
from agent.evidence.store import read_records, segment_file_name
from agent.evidence.verify import verify_store
from agent.verify_cli import render_text
from firmware_config.device_config import SyncSettings

DAY_US = 24 * HOUR_US
POLICY = RetentionPolicy(purge=True, keep_hours=0, long_term_keep_days=30)


def build(store: Path, script: str, clock: FakeClock) -> list[str]:
    """Write records by a script: ``seg`` the next segment file and its record, ``open``/``close`` a case,
    ``flag`` a long-term retention flag (in the open case, if any), ``event`` a bookmark. Returns the
    segment files in order."""
    names: list[str] = []
    with Ledger.open(store, KEY, DEVICE, clock, boot_reason="test") as ledger:
        case: str | None = None
        cases = sum(1 for r in read_records(store) if r.record.type == "case-open")
        for word in script.split():
            if word == "seg":
                index = ledger.next_segment_index()
                stored = ledger.layout.write_segment(segment_file_name(index, "bin"), stand_in_segment(DEVICE, index))
                ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
                names.append(stored.name)
            elif word == "open":
                cases += 1
                case = f"{DEVICE}-{cases:05d}"
                ledger.append("case-open", {"case_id": case, "procedure": "inspection", "officer": "A1"})
            elif word == "close":
                assert case is not None
                ledger.append("case-close", {"case_id": case, "officer": "A1", "missing": []})
                case = None
            elif word == "flag":
                body = {"retention_class": "long-term", "reason": "assault", "officer": "A1"}
                ledger.append("retention", body if case is None else {**body, "case_id": case})
            elif word == "event":
                ledger.append("event", {"kind": "bookmark"})
            else:
                raise AssertionError(f"unknown script word {word!r}")
    return names


def make_ack(
    store: Path, files: Iterable[str] = (), seq: int | None = None, *, signer: DeviceKey = STATION,
    key: DeviceKey = STATION, device: str = DEVICE, link: str | None = None,
) -> SignedAck:
    """An ack for ``store``'s record ``seq`` (default: the head) naming ``files`` with their recorded hashes."""
    records = read_records(store)
    target = records[-1] if seq is None else next(r for r in records if r.seq == seq)
    recorded = {str(r.record.body["file"]): r.record.body for r in records if r.record.type == "segment"}
    acked = [AckedFile(name, str(recorded[name]["sha256"]), int(recorded[name]["size"])) for name in files]
    return ack_of(target, acked, signer=signer, key=key, device=device, link=link)


def custody(store: Path, tmp_path: Path, clock: FakeClock, policy: RetentionPolicy = POLICY) -> DirectCustody:
    key_path = tmp_path / "device.key"
    if not key_path.exists():
        key_path.write_bytes(KEY.private_pem())
        key_path.chmod(0o600)
    return DirectCustody(store=store, key_path=key_path, device_id=DEVICE, station_key=STATION.public_key,
                         policy=policy, clock=clock)


def of_type(store: Path, record_type: str) -> list[SignedRecord]:
    return [r for r in read_records(store) if r.record.type == record_type]


def present(store: Path, names: Iterable[str]) -> list[str]:
    return [name for name in names if (store / name).exists()]


def later(clock: FakeClock, microseconds: int) -> None:
    clock.wall_us += microseconds
    clock.mono_us += microseconds


# --- receipts and purges ------------------------------------------------------------------------------------


def test_only_acknowledged_segments_are_purged(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    names = build(store, "seg seg event seg seg", clock)
    direct = custody(store, tmp_path, clock)
    signed = make_ack(store, names[:2])

    outcome = direct.record_receipt(signed.to_line())
    [receipt] = of_type(store, "receipt")
    assert outcome == f"ack for seq {signed.ack.seq} recorded as receipt seq {receipt.seq}"
    body = receipt.record.body
    assert (body["station"], body["station_key"], body["seq"], body["link"]) == (
        "station-1", STATION.fingerprint, signed.ack.seq, signed.ack.link)
    assert body["files"] == [f.sha256 for f in signed.ack.files]
    assert body["ack"].encode() + b"\n" == signed.to_line()  # the line as received, without its LF

    assert direct.purge_acknowledged() == names[:2]
    assert present(store, names) == names[2:]
    purges = of_type(store, "purge")
    assert [p.record.body["file"] for p in purges] == names[:2]
    assert all(p.record.body["reason"] == f"acknowledged by station station-1 in receipt seq {receipt.seq}; "
               "retention standard" for p in purges)
    assert [p.record.body["receipt_seq"] for p in purges] == [receipt.seq, receipt.seq]
    assert direct.purge_acknowledged() == []  # nothing left that a receipt names

    report = verify_store(store, KEY.public_key, mode=DEVICE_STORE)
    assert report.problems == []
    assert [n.object for n in report.notes if n.message.startswith("purged (acknowledged by station")] == [
        "segment 000001.bin", "segment 000002.bin"]


def test_a_segment_whose_record_the_station_lacks_is_kept(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    names = build(store, "seg seg seg", clock)
    segment_seqs = [r.seq for r in of_type(store, "segment")]
    # The station names the third file's hash but holds the chain only up to the second segment's record.
    direct = custody(store, tmp_path, clock)
    direct.record_receipt(make_ack(store, names, seq=segment_seqs[1]).to_line())
    assert direct.purge_acknowledged() == names[:2]
    assert present(store, names) == names[2:]


def _forged(store: Path, kind: str) -> SignedAck:
    names = [str(r.record.body["file"]) for r in of_type(store, "segment")]
    head = read_records(store)[-1]
    if kind == "other-key":  # claims to be the station's, signed by another key
        return make_ack(store, names, signer=IMPOSTOR)
    if kind == "other-key-named":  # honestly names its own key: not the provisioned one
        return make_ack(store, names, signer=IMPOSTOR, key=IMPOSTOR)
    if kind == "flipped-signature":
        good = make_ack(store, names)
        flipped = bytes([good.signature[0] ^ 0x01]) + good.signature[1:]
        return SignedAck(good.ack, good.payload, flipped)
    if kind == "other-device":
        return make_ack(store, names, device="dev-0002")
    if kind == "wrong-link":
        return make_ack(store, names, link=read_records(store)[-2].link)
    if kind == "beyond-head":
        return SignedAck(*_resigned(make_ack(store, names), seq=head.seq + 5))
    raise AssertionError(kind)


def _resigned(signed: SignedAck, seq: int) -> tuple[Ack, bytes, bytes]:
    ack = Ack(signed.ack.station, signed.ack.key, signed.ack.device, signed.ack.session, seq, signed.ack.link,
              signed.ack.files, signed.ack.wall_us)
    again = sign_ack(ack, STATION)
    return again.ack, again.payload, again.signature


FORGERIES = {
    "other-key": "signature invalid",
    "other-key-named": "signed by another station key",
    "flipped-signature": "signature invalid",
    "other-device": "about device 'dev-0002'",
    "wrong-link": "with a link this ledger does not have",
    "beyond-head": "with a link this ledger does not have",
}


@pytest.mark.parametrize("kind", sorted(FORGERIES))
def test_an_ack_that_does_not_verify_records_nothing_and_purges_nothing(tmp_path: Path, kind: str) -> None:
    store, clock = tmp_path / "store", FakeClock()
    names = build(store, "seg seg seg", clock)
    direct = custody(store, tmp_path, clock)
    forged = _forged(store, kind)
    before = (store / "ledger.jsonl").read_bytes()

    with pytest.raises(VerificationError, match=FORGERIES[kind]):
        direct.record_receipt(forged.to_line())
    assert (store / "ledger.jsonl").read_bytes() == before  # not even a boot record: the ledger was not opened
    # The IO function on an open ledger refuses it the same way.
    with Ledger.open(store, KEY, DEVICE, clock) as ledger, pytest.raises(VerificationError, match=FORGERIES[kind]):
        record_receipt(ledger, forged, STATION.public_key, DEVICE, read_records(store))
    assert of_type(store, "receipt") == []
    assert direct.purge_acknowledged() == []
    assert present(store, names) == names


# --- retention ----------------------------------------------------------------------------------------------


def _files(store: Path) -> list[str]:
    return [str(r.record.body["file"]) for r in of_type(store, "segment")]


def test_a_flagged_case_covers_its_segments_and_the_one_after_its_close(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg open seg seg flag seg close seg seg open seg close seg", clock)
    # s[0] before the case; s[1..3] in it; s[4] holds its last frames; s[5] no case; s[6..7] another case.
    assert long_term_files(read_records(store)) == {s[1], s[2], s[3], s[4]}


def test_a_flag_without_a_case_covers_its_stretch(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg open seg close seg seg flag seg open seg seg close seg", clock)
    # The no-case stretch runs from the first close to the second open: s[2] (the first case's last frames
    # as well), s[3], s[4], and s[5], the first segment of the next case, which holds the stretch's end.
    assert long_term_files(read_records(store)) == {s[2], s[3], s[4], s[5]}
    other = tmp_path / "other"
    t = build(other, "seg seg flag seg", FakeClock())
    assert long_term_files(read_records(other)) == set(t)  # no case at all: the whole ledger


def test_long_term_footage_is_kept_until_long_term_keep_days(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg open seg flag close seg seg", clock)
    direct = custody(store, tmp_path, clock, RetentionPolicy(purge=True, keep_hours=1, long_term_keep_days=2))
    direct.record_receipt(make_ack(store, s).to_line())

    later(clock, HOUR_US + 1)
    assert direct.purge_acknowledged() == [s[0], s[3]]  # standard footage: after keep_hours
    assert present(store, s) == [s[1], s[2]]
    later(clock, DAY_US)
    assert direct.purge_acknowledged() == []  # long-term: not yet
    later(clock, DAY_US)
    assert direct.purge_acknowledged() == [s[1], s[2]]
    long_term = [p.record.body["reason"] for p in of_type(store, "purge")][2:]
    assert all(reason.endswith("retention long-term") for reason in long_term)
    assert verify_store(store, KEY.public_key, mode=DEVICE_STORE).problems == []


def test_keep_hours_is_respected(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    policy = RetentionPolicy(purge=True, keep_hours=1.5, long_term_keep_days=30)
    direct = custody(store, tmp_path, clock, policy)
    direct.record_receipt(make_ack(store, s).to_line())
    first = of_type(store, "segment")[0].record.wall_us

    before = (store / "ledger.jsonl").read_bytes()
    later(clock, 90 * 60 * 1_000_000 - (clock.wall_us - first) - 10_000_000)  # 10 s short of 1.5 h
    assert purge_candidates(read_records(store), policy, clock.wall_us) == []
    assert direct.purge_acknowledged() == []
    assert (store / "ledger.jsonl").read_bytes() == before  # nothing to do: the ledger is not even opened
    later(clock, 60_000_000)
    assert [c.file for c in purge_candidates(read_records(store), policy, clock.wall_us)] == s
    assert direct.purge_acknowledged() == s


def test_purge_false_purges_nothing(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    policy = RetentionPolicy.from_settings(SyncSettings(purge=False))
    assert policy == RetentionPolicy(purge=False, keep_hours=0.0, long_term_keep_days=30.0)
    direct = custody(store, tmp_path, clock, policy)
    direct.record_receipt(make_ack(store, s).to_line())
    later(clock, 400 * DAY_US)
    assert purge_candidates(read_records(store), policy, clock.wall_us) == []
    assert direct.purge_acknowledged() == []
    assert present(store, s) == s and of_type(store, "purge") == []


# --- damage and crashes -------------------------------------------------------------------------------------


def test_a_file_tampered_before_its_purge_is_kept(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg seg", clock)
    custody(store, tmp_path, clock).record_receipt(make_ack(store, s).to_line())
    tampered = store / s[1]
    data = flip_byte(tampered, 100, 0xFF)

    with Ledger.open(store, KEY, DEVICE, clock) as ledger:
        outcome = run_purge(ledger, read_records(store), POLICY, clock.now().wall_us)
    assert outcome.purged == [s[0], s[2]]
    [refused] = outcome.refused
    assert s[1] in refused and "bytes on disk differ" in refused
    assert tampered.read_bytes() == data  # kept, for the verifier
    assert [p.record.body["file"] for p in of_type(store, "purge")] == [s[0], s[2]]
    problems = [str(p) for p in verify_store(store, KEY.public_key, mode=DEVICE_STORE).problems]
    assert len(problems) == 1 and "segment 000002.bin: sha256 mismatch" in problems[0]


def test_a_crash_between_the_purge_record_and_the_unlink(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    direct = custody(store, tmp_path, clock)
    direct.record_receipt(make_ack(store, s).to_line())
    # The condition a crash leaves: the purge record is durable, the file is still there.
    [candidate, _] = purge_candidates(read_records(store), POLICY, clock.wall_us)
    with Ledger.open(store, KEY, DEVICE, clock) as ledger:
        ledger.append("purge", {"file": candidate.file, "sha256": candidate.sha256, "reason": "test"})
    notes = verify_store(store, mode=DEVICE_STORE).notes
    assert any("still present after its purge record" in n.message for n in notes)

    assert direct.purge_acknowledged() == s
    assert present(store, s) == []
    assert [p.record.body["file"] for p in of_type(store, "purge")] == s  # no second record for s[0]
    report = verify_store(store, KEY.public_key, mode=DEVICE_STORE)
    assert report.problems == [] and not any("still present" in n.message for n in report.notes)


def test_a_purged_file_still_present_is_still_checked(tmp_path: Path) -> None:
    """The station's archive copy holds the device's purge records and every file: each file is verified."""
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    with Ledger.open(store, KEY, DEVICE, clock) as ledger:
        for candidate in [r for r in read_records(store) if r.record.type == "segment"]:
            body = candidate.record.body
            ledger.append("purge", {"file": body["file"], "sha256": body["sha256"], "reason": "test"})
    report = verify_store(store, KEY.public_key)
    assert report.problems == [] and report.segments == 2
    # What an auditor reads: one line saying this is normal for a station's copy, no per-file "note:".
    text = render_text(report)
    assert "note:" not in text, text
    assert ("ok: 2 file(s) kept here after the device purged its own copy (normal for the station's copy), each "
            "checked against its record: segment 000001.bin, segment 000002.bin") in text
    assert "ok: 2 file(s) purged from the device, each by a signed purge record" in text
    assert text.splitlines()[-1].startswith("INTACT")
    flip_byte(store / s[1], 10, 1)
    problems = [str(p) for p in verify_store(store, KEY.public_key).problems]
    assert len(problems) == 1 and "segment 000002.bin: sha256 mismatch" in problems[0]


def test_a_purged_name_is_never_given_out_again(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    direct = custody(store, tmp_path, clock)
    direct.record_receipt(make_ack(store, s).to_line())
    assert direct.purge_acknowledged() == s
    assert build(store, "seg", clock) == ["segments/000003.bin"]  # not 000001 again: the folder is empty
    assert verify_store(store, KEY.public_key, mode=DEVICE_STORE).problems == []


# --- the receipt-for-receipt exchange -----------------------------------------------------------------------


def test_receipt_news_suppresses_acks_of_custodys_own_records(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    direct = custody(store, tmp_path, clock)
    first = make_ack(store, s)
    assert "recorded as receipt" in direct.record_receipt(first.to_line())
    assert [r.record.body["reason"] for r in of_type(store, "boot")][-1] == "custody"
    assert direct.purge_acknowledged() == s  # a purge record too

    # The station acknowledges the custody boot, the receipt and the purges: no news.
    only_own = make_ack(store)
    assert receipt_news(only_own.ack, read_records(store)) is False
    before = (store / "ledger.jsonl").read_bytes()
    assert "not recorded" in direct.record_receipt(only_own.to_line())
    assert "not recorded" in direct.record_receipt(first.to_line())  # a duplicate delivery
    assert "not recorded" in direct.record_receipt(make_ack(store, s[:1]).to_line())  # a file offered again
    assert (store / "ledger.jsonl").read_bytes() == before

    # News: a file no receipt named yet, or a record the agent wrote.
    t = build(store, "seg", clock)
    assert receipt_news(make_ack(store, t).ack, read_records(store)) is True
    assert "recorded as receipt" in direct.record_receipt(make_ack(store).to_line())
    assert len(of_type(store, "receipt")) == 2
    assert acknowledged(read_records(store)) == {str(r.record.body["sha256"]): of_type(store, "receipt")[0].seq
                                                 for r in of_type(store, "segment")[:2]}


# --- one writer ---------------------------------------------------------------------------------------------


def test_direct_custody_refuses_while_another_writer_holds_the_ledger(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg", clock)
    direct = custody(store, tmp_path, clock)
    with Ledger.open(store, KEY, DEVICE, clock, boot_reason="agent") as agent:
        with pytest.raises(LedgerBusyError, match=r"held by the running agent.*control socket"):
            direct.record_receipt(make_ack(store, s).to_line())
        agent.append("event", {"kind": "bookmark"})  # the holder is unaffected
    assert of_type(store, "receipt") == []
    direct.record_receipt(make_ack(store, s).to_line())  # once it is free, it works
    assert direct.purge_acknowledged() == s
    assert os.listdir(store / "segments") == []


def test_a_name_purged_while_the_ledger_is_open_is_not_given_out_again(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    build(store, "event", clock)
    with Ledger.open(store, KEY, DEVICE, clock) as ledger:
        stored = ledger.layout.write_segment(segment_file_name(1, "bin"), b"frames")
        ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
        (store / stored.name).unlink()  # as a purge in the agent's own session removes it
        assert ledger.next_segment_index() == 2


def test_several_acks_are_recorded_with_one_opening_of_the_ledger(tmp_path: Path) -> None:
    store, clock = tmp_path / "store", FakeClock()
    s = build(store, "seg seg seg", clock)
    direct = custody(store, tmp_path, clock)
    forged = make_ack(store, [s[1]], signer=DeviceKey.generate())
    boots_before = len(of_type(store, "boot"))

    outcomes = direct.record_receipts([make_ack(store, [s[0]]).to_line(), forged.to_line(),
                                       make_ack(store, [s[2]]).to_line()])

    assert isinstance(outcomes[1], VerificationError) and "signature invalid" in str(outcomes[1])
    assert [str(o).split(" as ")[0] for o in (outcomes[0], outcomes[2])] == ["ack for seq 4 recorded"] * 2
    receipts = of_type(store, "receipt")
    assert [r.record.body["files"] for r in receipts] == [[make_ack(store, [s[0]]).ack.files[0].sha256],
                                                          [make_ack(store, [s[2]]).ack.files[0].sha256]]
    assert len(of_type(store, "boot")) == boots_before + 1  # one opening for the batch
    assert verify_store(store, KEY.public_key, mode=DEVICE_STORE).intact
    # The file the forged ack named has no receipt: it is not purged.
    assert direct.purge_acknowledged() == [s[0], s[2]]
    assert present(store, s) == [s[1]]
