"""Helpers the benchmarks share: percentiles, latency summaries, which file system a store is on.

The benchmarks are scripts (``python benchmarks/bench_x.py``), so this module is imported from beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (p99 of 1,000 samples is the 990th smallest)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_values[int(rank) - 1]


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """count, per_s (back to back), mean, min, p50, p99 and max in milliseconds; NaN when there are none."""
    values = sorted(ns / 1e6 for ns in samples_ns)
    if not values:
        nan = float("nan")
        return {"count": 0, "per_s": nan, "mean_ms": nan, "min_ms": nan, "p50_ms": nan, "p99_ms": nan, "max_ms": nan}
    total_s = sum(samples_ns) / 1e9
    return {
        "count": len(values),
        "per_s": len(values) / total_s if total_s else float("inf"),
        "mean_ms": sum(values) / len(values),
        "min_ms": values[0],
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1],
    }


def filesystem_of(path: Path) -> dict[str, str]:
    """File system type, device and mount point holding ``path`` (df -PT, else /proc/mounts)."""
    try:
        out = subprocess.run(
            ["df", "-PT", str(path)], capture_output=True, text=True, check=True, timeout=10
        ).stdout.splitlines()
        fields = out[-1].split()
        # Filesystem Type 1024-blocks Used Available Capacity Mounted-on (the mount point may hold spaces)
        return {"type": fields[1], "source": fields[0], "mount": " ".join(fields[6:])}
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    best = {"type": "unknown", "source": "?", "mount": "?"}
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                source, mount, fstype = line.split()[:3]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best["mount"].replace("?", "")):
                    best = {"type": fstype, "source": source, "mount": mount}
    except OSError:
        pass
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run_in_workdir(
    prefix: str,
    args: Any,
    run: Callable[[Any, Path], dict[str, Any]],
    print_table: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run a benchmark in a fresh temporary folder under ``args.dir`` and print its result.

    The folder is removed afterwards unless ``args.keep``; ``args.json`` prints JSON instead of the table.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=args.dir)).resolve()
    try:
        result = run(args, workdir)
    finally:
        if args.keep:
            print(f"kept the benchmark's files in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result
