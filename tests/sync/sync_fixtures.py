"""The real-broker fixtures every folder of tests may use (registered in tests/conftest.py): ``mosquitto``
and ``world``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_fixture import MosquittoBroker
from sync_world import SyncWorld


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


@pytest.fixture
def world(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[SyncWorld]:
    """A station (config, enrolled devices, its receiver as a real process) around the ``mosquitto`` broker;
    every process it started is stopped at teardown."""
    w = SyncWorld(tmp_path, mosquitto)
    try:
        yield w
    finally:
        w.close()
