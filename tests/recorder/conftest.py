from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeClock, seeded_key
from recorder_support import DEVICE, RecorderFactory, settings

from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.recorder.segmenter import Segmenter


@pytest.fixture
def key() -> DeviceKey:
    return seeded_key(7)


@pytest.fixture
def recorder(tmp_path: Path, key: DeviceKey) -> Iterator[RecorderFactory]:
    """Factory: ``recorder(root=None, **settings) -> (ledger, segmenter)``, the segmenter started (armed).

    The ledger uses a FakeClock; every segmenter and ledger made is stopped and closed at teardown.
    """
    made: list[tuple[Ledger, Segmenter]] = []

    def factory(root: Path | None = None, **overrides: Any) -> tuple[Ledger, Segmenter]:
        ledger = Ledger.open(root or tmp_path / "store", key, DEVICE, clock=FakeClock())
        segmenter = Segmenter(ledger=ledger, settings=settings(**overrides))
        segmenter.start()
        made.append((ledger, segmenter))
        return ledger, segmenter

    yield factory
    for ledger, segmenter in made:
        segmenter.stop()
        ledger.close()
