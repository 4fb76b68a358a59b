"""systemd's notify protocol: READY, STATUS, WATCHDOG, STOPPING as datagrams to $NOTIFY_SOCKET.

Without ``NOTIFY_SOCKET`` (not started by systemd, or not Type=notify) every call does nothing. The
watchdog is fed by :class:`FrameWatchdog` only while frames are flowing, so a camera that stopped producing
makes systemd restart the service (WatchdogSec= in the unit).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An address starting with "@" is in the abstract namespace: a leading NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1_000_000 if usec.isdigit() and int(usec) > 0 and mine else None
        self.last_status: str | None = None  # the newest STATUS sent (by anyone), so a repeat can be left out

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> None:
        if "status" in fields:
            self.last_status = fields["status"]
        if not self.address:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:  # systemd gone (shutdown) or the socket path wrong: log, never crash the agent
            log.warning("sd_notify to %r failed: %s", self.address, exc.strerror)

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status)

    def status(self, status: str) -> None:
        self.send(status=status)

    def watchdog(self) -> None:
        self.send(watchdog="1")

    def stopping(self, status: str) -> None:
        self.send(stopping="1", status=status)


class FrameWatchdog:
    """Feeds systemd's watchdog at half its interval, but only when ``frames()`` grew since the last look."""

    def __init__(self, notifier: Notifier, frames: Callable[[], int]) -> None:
        self.notifier = notifier
        self._frames = frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fed = 0
        self.starved = 0

    def start(self) -> None:
        if self.notifier.watchdog_seconds is None:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self.notifier.watchdog_seconds is not None
        interval = self.notifier.watchdog_seconds / 2
        last = self._frames()
        while not self._stop.wait(interval):
            now = self._frames()
            if now > last:
                self.notifier.watchdog()
                self.fed += 1
            else:
                self.starved += 1
                self.notifier.status(f"no camera frames for {interval:.1f} s: watchdog not fed")
                log.error("no camera frames for %.1f s: not feeding the watchdog", interval)
            last = now
