"""Messages the receiver failed on, kept aside for a person: the payload byte for byte and what happened.

A message that makes the receiver itself fail (a bug its content triggers, not a refusal the protocol
foresees) is taken out of its batch and settled with the broker, so it is never redelivered in a loop and
the other messages, and the other devices, go on. What it was stays here, under ``DATA/set-aside``, named by
its digest: ``<digest>.msg`` (the payload) and ``<digest>.json`` (topic, device, error, when, how often).
"""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
from pathlib import Path

from agent.errors import StoreError
from agent.evidence.fsutil import fsync_dir, write_file_durably

DOMAIN = b"bodycam-set-aside-v1\0"
# Errors that say the station's own storage or index is failing (the disk, not the message): then nothing
# can be judged and the receiver stops taking messages in, as before. Anything else raised while one message
# is handled is that message's doing. EFBIG is a message's doing: only a device-chosen offset reaches it.
_STATION_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE,
                             errno.ENFILE, errno.EACCES, errno.EPERM})


def is_station_failure(exc: BaseException) -> bool:
    """True when ``exc`` is the station's storage or index failing, not something one message caused."""
    if isinstance(exc, OSError):
        return exc.errno in _STATION_ERRNOS or exc.errno is None
    return isinstance(exc, (sqlite3.Error, MemoryError, StoreError))


def message_digest(topic: str, payload: bytes) -> str:
    return hashlib.sha256(DOMAIN + topic.encode("utf-8", "backslashreplace") + b"\0" + payload).hexdigest()


class SetAside:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, topic: str, payload: bytes, device: str | None, error: str, at_us: int) -> Path:
        """Keep the message durably; the path of its payload. The same message again only counts."""
        digest = message_digest(topic, payload)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        body, meta = self.folder / f"{digest}.msg", self.folder / f"{digest}.json"
        if not body.exists():
            write_file_durably(body, payload, mode=0o400, exclusive=True)
        seen = 0
        if meta.exists():
            try:
                seen = int(json.loads(meta.read_text())["times"])
            except (ValueError, KeyError, TypeError):
                seen = 0
        record = {"topic": topic, "device": device, "error": error, "last_us": at_us, "times": seen + 1,
                  "payload_bytes": len(payload)}
        temporary = meta.with_suffix(".json.tmp")
        temporary.unlink(missing_ok=True)
        write_file_durably(temporary, json.dumps(record, sort_keys=True).encode() + b"\n", mode=0o600,
                           exclusive=True)
        temporary.replace(meta)
        fsync_dir(self.folder)
        return body
