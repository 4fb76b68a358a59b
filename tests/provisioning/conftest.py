from __future__ import annotations

import sys
from pathlib import Path

# The real-broker helpers live with the broker's own tests (tests/sync/broker_fixture.py); its conftest is not
# loaded for this folder, so make the module importable here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sync"))
