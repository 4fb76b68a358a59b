"""`make demo` stays true: scripts/demo.sh runs the whole story (device, broker, station, sync, purge)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from broker_fixture import mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]


GAP = "..."  # a README line of its own: output lines left out here


def readme_demo_block() -> list[str]:
    """The README's sample of the demo's output: the code block after the comment that announces it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index("tests/sync/test_demo_script.py checks it"):]
    start = after.index("```\n") + 4
    return after[start:after.index("```\n", start)].splitlines()


def shape(line: str) -> str:
    """A line with what changes from run to run (hashes, numbers, times) made alike."""
    return re.sub(r"[0-9a-f]{8,}|-?\d+(\.\d+)?", "#", line.rstrip())


def check_sample(sample: list[str], output: list[str]) -> None:
    """Each sample line is the next output line (or a later one, after a GAP line), in shape."""
    position, gap = 0, False
    for line in sample:
        if line.strip() == GAP:
            gap = True
            continue
        want = shape(line)
        found = next((i for i in range(position, len(output)) if shape(output[i]) == want), None)
        assert found is not None and (gap or found == position), (
            f"README's demo output is stale: {line!r} is not the demo's "
            f"{'next line' if not gap else 'output from here on'}; the demo printed {output[position:position + 3]}")
        position, gap = found + 1, False


@pytest.mark.slow
def test_demo_script_syncs_verifies_and_purges(tmp_path: Path) -> None:
    mosquitto_binary()  # skips (or fails in CI) without a broker, as the other sync tests do
    demo = tmp_path / "demo"
    env = dict(os.environ, BIN=str(Path(sys.executable).parent), DEMO=str(demo))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    check_sample(readme_demo_block(), out.replace(str(demo), ".demo").splitlines())
    assert out.count("INTACT:") == 2  # the station's copy and the device's store
    assert "missing required stages: none" in out
    assert "open problems 0" in out
    assert "segment files left on the device: 0" in out
    copy = tmp_path / "demo" / "station" / "data" / "devices" / "cam-demo" / "segments"
    assert len(list(copy.iterdir())) >= 2


def test_a_stale_sample_is_caught() -> None:
    output = ["== a", "x 12 records", "y", "z abcdef0123"]
    check_sample(["== a", "x 48 records", GAP, "z 00112233aa"], output)
    for stale in (["== a", "y"], ["== a", "x 48 files"], ["== a", GAP, "w"], ["x 12 records", "== a"]):
        with pytest.raises(AssertionError, match="stale"):
            check_sample(stale, output)
