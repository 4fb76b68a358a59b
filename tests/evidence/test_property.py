"""Property: any single-byte change anywhere in the ledger or in a segment file makes the store not intact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key, stand_in_store
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.evidence.verify import verify_store

SEGMENTS = 3
LEDGER = "ledger.jsonl"
SEGMENT_FILES = [f"segments/{i:06d}.bin" for i in range(1, SEGMENTS + 1)]
FILES = [LEDGER, *SEGMENT_FILES]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("property") / "store"
    stand_in_store(store, seeded_key(7), "prop-0001", SEGMENTS, clock=FakeClock())
    assert verify_store(store).intact
    return store


@pytest.fixture(scope="module")
def sizes(pristine: Path) -> dict[str, int]:
    return {name: (pristine / name).stat().st_size for name in FILES}


@settings(max_examples=200, deadline=None)
@given(
    name=st.one_of(st.just(LEDGER), st.sampled_from(SEGMENT_FILES)),  # half the changes hit the ledger
    position=st.integers(-(2**20), 2**20 - 1),  # taken modulo the file's size: -1 is its last byte
    mask=st.integers(1, 255),
)
# The ledger's first byte, its final LF (turned into a space), a segment's first and last byte.
@example(name=LEDGER, position=0, mask=1)
@example(name=LEDGER, position=-1, mask=0x0A ^ 0x20)
@example(name=SEGMENT_FILES[0], position=0, mask=0xFF)
@example(name=SEGMENT_FILES[-1], position=-1, mask=0x80)
def test_any_single_byte_change_is_detected(
    pristine: Path,
    sizes: dict[str, int],
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    position: int,
    mask: int,
) -> None:
    offset = position % sizes[name]
    store = tmp_path_factory.mktemp("example") / "store"
    shutil.copytree(pristine, store)
    path = store / name
    os.chmod(path, 0o644)  # segment files are 0444
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))

    report = verify_store(store)
    assert not report.intact, f"{name} byte {offset} ^ {mask:#04x} not detected"
    shutil.rmtree(store)
