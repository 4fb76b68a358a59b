"""The start-up self-test's checks (SPEC art. 26): camera, store, clock, key.

Each check is a small function returning a :class:`Check`; the decisions (``*_verdict``) are pure and the
IO around them is thin. A failed camera, store or key check keeps the device from saying it is ready. The
clock is different: an untrusted clock (not synchronised in this boot, no RTC) is recorded and shown in the
overlay, never a failure, since footage with an honest "clock untrusted" mark beats no footage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import KeyFileError, StoreError
from agent.evidence.fsutil import display_path, fsync_dir
from agent.evidence.keys import DeviceKey, load_device_key, load_or_create_device_key
from agent.evidence.store import StoreLayout
from agent.health.report import Check
from agent.recorder.storage import free_bytes

PROBE_BYTES = 4096
MIB = 1024 * 1024


def size_text(n: int) -> str:
    """Bytes for people: "512.0 MiB", "70.1 GiB"."""
    if n >= 1024 * MIB:
        return f"{n / (1024 * MIB):.1f} GiB"
    return f"{n / MIB:.1f} MiB"


# --- camera ---------------------------------------------------------------------------------------------


def camera_verdict(seen: int, wanted: int, elapsed: float, timeout: float, error: str | None) -> Check:
    if error is not None:
        return Check("camera", False, f"capture failed after {seen} frames: {error}")
    if seen >= wanted:
        return Check("camera", True, f"{seen} frames in {elapsed:.2f} s")
    if seen == 0:
        return Check("camera", False, f"no frames within {timeout:g} s")
    return Check("camera", False, f"only {seen} of {wanted} frames within {timeout:g} s")


def watch_camera(
    frames: Callable[[], int],
    wanted: int,
    timeout: float,
    failure: Callable[[], BaseException | None] = lambda: None,
    poll: float = 0.02,
) -> Check:
    """Wait until ``frames()`` (counted since the camera was armed) reaches ``wanted``, it fails, or time is up."""
    started = time.monotonic()
    while True:
        seen, error, elapsed = frames(), failure(), time.monotonic() - started
        if seen >= wanted or error is not None or elapsed >= timeout:
            return camera_verdict(seen, wanted, elapsed, timeout, None if error is None else str(error))
        time.sleep(poll)


class CountingOutput:
    """An output in picamera2's protocol that only counts frames: the camera check without a recorder."""

    def __init__(self) -> None:
        self.frames = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        if not audio and frame is not None:
            self.frames += 1

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        pass


# --- store ----------------------------------------------------------------------------------------------


def space_verdict(free: int, floor: int) -> Check:
    if free <= floor:
        return Check("store", False, f"only {size_text(free)} free, at or below the floor of {size_text(floor)} "
                                     "(recorder.floor_mb)")
    return Check("store", True, f"writable, {size_text(free)} free (floor {size_text(floor)})")


def probe_write(folder: Path) -> str | None:
    """Write, fsync and remove a small file in ``folder``; None when that worked, else what went wrong."""
    path = folder / f".health-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return f"{display_path(folder)}: cannot create a file ({exc.strerror})"
    try:
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        fsync_dir(folder)
    except OSError as exc:
        return f"{display_path(folder)}: cannot write a file ({exc.strerror})"
    finally:
        if path.exists():
            with contextlib.suppress(OSError):  # already reported above: the write (or the unlink) failed
                path.unlink()
    return None


def store_problem(store: Path, create: bool) -> tuple[str | None, Path]:
    """Whether the store takes a durable write: (what went wrong or None, the folder to measure free space in).

    ``create``: make the store's folders first (the daemon, which would make them anyway). Without it (the
    technician's ``selftest``) a store that does not exist yet is judged by the folder it will be made in.
    """
    layout = StoreLayout(store)
    if create:
        try:
            layout.create()
        except StoreError as exc:
            return str(exc), store
        folders = [layout.root, layout.segments_dir]
    elif store.is_dir():
        folders = [layout.root] + ([layout.segments_dir] if layout.segments_dir.is_dir() else [])
    else:
        parent = store.parent
        while not parent.is_dir() and parent != parent.parent:
            parent = parent.parent
        folders = [parent]
    for folder in folders:
        problem = probe_write(folder)
        if problem is not None:
            return problem, folders[0]
    return None, folders[0]


def check_store(store: Path, floor_bytes: int, create: bool) -> tuple[Check, bool]:
    """The store takes a durable write and its free space is above the floor: (the check, writable).

    A store that is writable but at its floor still takes the signed record of the failed self-test."""
    problem, folder = store_problem(store, create)
    if problem is not None:
        return Check("store", False, problem), False
    try:
        free = free_bytes(folder)
    except OSError as exc:
        return Check("store", False, f"{display_path(folder)}: free space unknown ({exc.strerror})"), True
    return space_verdict(free, floor_bytes), True


# --- clock ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockTrust:
    trusted: bool
    detail: str

    def check(self) -> Check:
        return Check("clock", True, f"{'trusted' if self.trusted else 'untrusted'}: {self.detail}")


def clock_verdict(synced: bool, rtc: bool, marker: str, rtc_path: str) -> ClockTrust:
    if synced:
        return ClockTrust(True, f"synchronised since boot ({marker})")
    if rtc:
        return ClockTrust(True, f"real-time clock present ({rtc_path})")
    return ClockTrust(False, "not synchronised since boot and no real-time clock")


def clock_trust(marker: str, rtc_path: str) -> ClockTrust:
    """Trusted when the sync marker exists or an RTC is present (an empty path is not looked at)."""
    return clock_verdict(bool(marker) and os.path.exists(marker), bool(rtc_path) and os.path.exists(rtc_path),
                         marker, rtc_path)


# --- key ------------------------------------------------------------------------------------------------


def key_verdict(fingerprint: str, enrolled: str) -> Check:
    if not enrolled:
        return Check("key", True, f"fingerprint {fingerprint[:16]}... (no enrolled fingerprint configured)")
    if fingerprint == enrolled.strip().lower():
        return Check("key", True, f"fingerprint {fingerprint[:16]}... is the enrolled one")
    return Check("key", False, f"fingerprint {fingerprint[:16]}... is not the enrolled {enrolled.strip()[:16]}...")


def check_key(path: Path, enrolled: str, create: bool) -> tuple[Check, DeviceKey | None]:
    """The key is readable (created on the daemon's first start when ``create``) and is the enrolled one.

    The key comes back even when it is not the enrolled one: it still signs the report that says so."""
    try:
        key = load_or_create_device_key(path) if create else load_device_key(path)
    except KeyFileError as exc:
        return Check("key", False, str(exc)), None
    return key_verdict(key.fingerprint, enrolled), key


# --- the result -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfTestResult:
    checks: tuple[Check, ...]
    clock: ClockTrust

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def summary(self) -> str:
        """One line: "self-test passed; clock trusted (...)" or "self-test failed: store: ...; key: ..."."""
        if self.passed:
            return f"self-test passed; clock {'trusted' if self.clock.trusted else 'untrusted'} ({self.clock.detail})"
        return "self-test failed: " + "; ".join(f"{check.name}: {check.detail}" for check in self.failures)

    def ledger_body(self) -> dict[str, Any]:
        """The signed ``selftest`` event's body."""
        return {
            "kind": "selftest",
            "result": "pass" if self.passed else "fail",
            "clock_trusted": self.clock.trusted,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }
