from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fixture import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running Mosquitto (mutual TLS, the generated ACL) with devices "dev-a" and "dev-b" enrolled.

    Its files are under ``tmp_path / "broker"``; every client made with ``connect`` is closed and the broker
    stopped at teardown. Skipped when mosquitto is not installed, except in CI.
    """
    broker = MosquittoBroker(tmp_path / "broker")
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
