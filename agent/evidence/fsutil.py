"""Durable file operations and safe display of paths.

Durable create: write a temporary file, fsync it, rename it into place, fsync the folder. After a failed
fsync the data is treated as lost (PostgreSQL's lesson): callers get the error, never a retry that trusts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_CHUNK_BYTES = 1024 * 1024


def display_path(path: Path | str) -> str:
    """A path as printable text, even when it is not valid UTF-8 (undecodable bytes shown as \\xNN)."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (created, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, mode: int = 0o444, exclusive: bool = False) -> None:
    """Create ``path`` with ``data`` so that after return it survives a power cut, with ``mode``.

    With ``exclusive`` an existing file is an error (FileExistsError) rather than replaced.
    """
    if exclusive and path.exists():
        raise FileExistsError(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if exclusive:
        # link() fails if the target exists, unlike rename(): no window to overwrite a key or evidence.
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink()
    else:
        os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a file, read in large chunks (hashlib releases the GIL for them)."""
    digest, size, _ = sha256_file_ranges(path, [])
    return digest, size


def sha256_file_ranges(path: Path, ranges: list[tuple[int, int]]) -> tuple[str, int, list[str | None]]:
    """Whole-file SHA-256 and size, plus the SHA-256 of each (offset, length) range, in one read.

    A range that runs past the end of the file gets None.
    """
    whole = hashlib.sha256()
    partial = [hashlib.sha256() for _ in ranges]
    position = 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(HASH_CHUNK_BYTES)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            whole.update(view[:count])
            end = position + count
            for (offset, length), digest in zip(ranges, partial, strict=True):
                lo, hi = max(offset, position), min(offset + length, end)
                if lo < hi:
                    digest.update(view[lo - position : hi - position])
            position = end
    complete = [offset + length <= position for offset, length in ranges]
    return whole.hexdigest(), position, [d.hexdigest() if ok else None for d, ok in zip(partial, complete, strict=True)]
