from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real-broker fixture and the sync world live with the sync tests (tests/sync); their conftest is not
# loaded for this folder, so make the modules importable here (as tests/uploader/conftest.py does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sync"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "camera"))  # camera_doubles

from broker_fixture import MosquittoBroker
from sync_world import SyncWorld


@pytest.fixture
def assign_world(tmp_path: Path) -> Iterator[SyncWorld]:
    """tests/sync/conftest.py's ``world``: a station (config, its receiver as a real process) around a running
    Mosquitto; every process stopped and the broker closed at teardown."""
    broker = MosquittoBroker(tmp_path / "broker")
    try:
        broker.start()
        world = SyncWorld(tmp_path, broker)
        try:
            yield world
        finally:
            world.close()
    finally:
        broker.close()
