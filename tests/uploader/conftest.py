from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fixture import MosquittoBroker
from upload_helpers import BrokerFactory


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """``broker_factory(max_packet_bytes=...)``: a running Mosquitto (mutual TLS, the generated ACL) with devices
    "dev-a" and "dev-b"; stopped at teardown. Skipped when mosquitto is not installed, except in CI."""
    started: list[MosquittoBroker] = []

    def factory(max_packet_bytes: int = 4 * 1024 * 1024) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"broker-{len(started)}", max_packet_bytes=max_packet_bytes)
        started.append(broker)
        broker.start()
        return broker

    try:
        yield factory
    finally:
        for broker in started:
            broker.close()


@pytest.fixture
def mosquitto(broker_factory: BrokerFactory) -> MosquittoBroker:
    """The same broker as tests/sync's ``mosquitto`` fixture."""
    return broker_factory()
