"""Messages the receiver failed on, kept aside for a person: the payload byte for byte and what happened.

A message that makes the receiver itself fail (a bug its content triggers, not a refusal the protocol
foresees) is taken out of its batch and settled with the broker, so it is never redelivered in a loop and
the other messages, and the other devices, go on. What it was stays here, under ``DATA/set-aside``, named by
its digest: ``<digest>.msg`` (the payload) and ``<digest>.json`` (topic, device, error, when, how often).

A message may also kill the process outright (the kernel's OOM killer, a crash in a native library), where
no exception is seen. So the digests of the batch being handled are written to ``in-flight`` first (no
fsync: it only has to survive the process, not the machine) and cleared after it. At a start, what is still
there was in flight when the last run died: each such message gets a strike (``strikes.json``). A message
with a strike is handled in a batch of its own, so a second death names it alone; at two strikes it is set
aside without being handled. One death is not enough, because a power cut or a kill by an operator would
then set innocent messages aside.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from agent.errors import StoreError
from agent.evidence.fsutil import fsync_dir, write_file_durably

log = logging.getLogger(__name__)
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


DEATHS_TO_SET_ASIDE = 2


class SetAside:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._in_flight = folder / "in-flight"
        self._strikes_file = folder / "strikes.json"
        self._strikes: dict[str, int] = {}

    # --- deaths ----------------------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """At a start: a strike for every message in flight when the last run died; their digests."""
        self._strikes = self._read_strikes()
        try:
            died = [d for d in self._in_flight.read_text("ascii").split() if len(d) == 64]
        except (FileNotFoundError, UnicodeDecodeError):
            died = []
        for digest in died:
            self._strikes[digest] = self._strikes.get(digest, 0) + 1
        if died:
            self._write_strikes()
        self._in_flight.unlink(missing_ok=True)
        return died

    def strikes(self, digest: str) -> int:
        return self._strikes.get(digest, 0)

    def forgive(self, digest: str) -> None:
        """The message was handled after all (its strike came from a death it did not cause)."""
        if self._strikes.pop(digest, None) is not None:
            self._write_strikes()

    def begin(self, digests: Sequence[str]) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._in_flight, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, "\n".join(digests).encode("ascii"))
        finally:
            os.close(fd)

    def end(self) -> None:
        os.truncate(self._in_flight, 0)

    def _read_strikes(self) -> dict[str, int]:
        try:
            value = json.loads(self._strikes_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # A torn file: strikes are a safety net, losing them only delays a set-aside; said, not hidden.
            log.warning("%s: unreadable (%s); counting deaths afresh", self._strikes_file, exc)
            return {}
        return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, int)} \
            if isinstance(value, dict) else {}

    def _write_strikes(self) -> None:
        temporary = self._strikes_file.with_suffix(".json.tmp")
        temporary.unlink(missing_ok=True)
        write_file_durably(temporary, json.dumps(self._strikes, sort_keys=True).encode(), mode=0o600,
                           exclusive=True)
        temporary.replace(self._strikes_file)
        fsync_dir(self.folder)

    # --- keeping ---------------------------------------------------------------------------------------------

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
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: unreadable (%s); its count starts again", meta, exc)
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
