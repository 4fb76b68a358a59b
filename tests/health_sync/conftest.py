from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real-broker fixture and the station-around-a-broker world live in tests/sync; its conftest is not
# loaded for this folder, so make the modules importable here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sync"))

from broker_fixture import MosquittoBroker
from sync_world import SyncWorld


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """The same broker as tests/sync's ``mosquitto`` fixture (devices "dev-a" and "dev-b")."""
    broker = MosquittoBroker(tmp_path / "broker")
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def world(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[SyncWorld]:
    w = SyncWorld(tmp_path, mosquitto)
    try:
        yield w
    finally:
        w.close()
