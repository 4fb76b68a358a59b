from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key, stand_in_store

from agent.evidence.keys import DeviceKey

StoreFactory = Callable[..., tuple[Path, DeviceKey]]

# ``mosquitto`` and ``world`` for every folder (tests/sync/sync_fixtures.py; pyproject's pytest pythonpath).
pytest_plugins = ["sync_fixtures"]


@pytest.fixture
def short_folder() -> Iterator[Path]:
    """A short folder for a Unix socket (its path is limited to 107 bytes; tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="bc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(tmp_path: Path) -> StoreFactory:
    """Factory: a stand-in device store under tmp_path, made with a seeded key and a FakeClock.

    ``make_store(seed=1, device_id="dev-0001", seconds=5, name=None) -> (store_path, key)``. With the
    defaults the ledger is: 1 boot, 2 event, 3-6 segments 000001-000004, 7 bookmark, 8 segment 000005,
    9 event.
    """

    def factory(
        seed: int = 1, device_id: str = "dev-0001", seconds: int = 5, name: str | None = None
    ) -> tuple[Path, DeviceKey]:
        store = tmp_path / (name or f"store-{device_id}")
        key = seeded_key(seed)
        stand_in_store(store, key, device_id, seconds, clock=FakeClock())
        return store, key

    return factory


@pytest.fixture
def store(make_store: StoreFactory) -> tuple[Path, DeviceKey]:
    """The first device's store ("dev-0001", key seed 1)."""
    return make_store()


@pytest.fixture
def other_store(make_store: StoreFactory) -> tuple[Path, DeviceKey]:
    """A second device's store ("dev-0002", key seed 2), same shape as ``store``."""
    return make_store(seed=2, device_id="dev-0002")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test only, for a real ENOSPC from the kernel.

    Needs root (CI runs as root); skipped, with the reason, where mounting is not allowed.
    """
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("ENOSPC test needs root and mount(8) to mount a small tmpfs")
    point = tmp_path / "small-fs"
    point.mkdir()
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m,mode=0755", "bodycam-test", str(point)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
