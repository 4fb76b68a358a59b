"""Stored evidence as hard to change as plain file modes allow: read-only files, folders closed for writing.

Objects and the names a device's layout gives them are 0444; the folders that hold them (objects'
``sha256/<2 hex>``, ``devices/<D>`` and its ``segments``/``quarantine``) are 0550, opened (0750) only for
the instant the receiver adds a name; ledger copies and the station's ack log are 0444 between appends.
A process of another user cannot change or remove any of it; the station's own user must first chmod
on purpose (an accident, a stray ``rm`` or a script writing to the wrong path is refused). Root can do
anything: that is what ``bodycam-station scrub`` (sync/station/scrub.py) and the signed acks in each
copy are for (docs/station-archive.md).

``chattr +i`` is not used: an immutable inode refuses new hard links (a device's layout names each object
by a hard link, and identical files of two devices share one object), and setting it needs
CAP_LINUX_IMMUTABLE, which the unprivileged receiver has not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READ_ONLY_FILE = 0o444
APPENDABLE_FILE = 0o644
SEALED_DIR = 0o550
OPEN_DIR = 0o750


@contextmanager
def opened_dir(folder: Path) -> Iterator[None]:
    """Let the receiver add or remove names in ``folder`` for the duration; closed again even on error."""
    os.chmod(folder, OPEN_DIR)
    try:
        yield
    finally:
        os.chmod(folder, SEALED_DIR)


def seal_dir(folder: Path) -> None:
    os.chmod(folder, SEALED_DIR)


def open_for_append(path: Path) -> int:
    """An O_APPEND descriptor on ``path`` (created 0644 when missing); :func:`close_appended` seals it."""
    if path.exists():
        os.chmod(path, APPENDABLE_FILE)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, APPENDABLE_FILE)


def close_appended(fd: int) -> None:
    try:
        os.fchmod(fd, READ_ONLY_FILE)
    finally:
        os.close(fd)
