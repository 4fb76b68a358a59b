from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from station_support import Station


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    """A receiver on an empty data folder (tmp_path/"data") with no device enrolled."""
    made = Station(tmp_path / "data")
    try:
        yield made
    finally:
        made.close()
