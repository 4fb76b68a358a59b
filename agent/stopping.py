"""What stopped the daemon, when the officer did not: the signal, a shutdown, a fatal fault (issue 12, fault 4).

``bodycam-agent run`` stops on SIGTERM (``systemctl stop``, and every unit at a shutdown) and SIGINT, or when
it fails. The cause is signed (a ``stop-reason`` record with ``source: system`` inside a case) before the
camera stops, so a case's timeline says why its recording ended. :func:`system_stop_cause` decides, pure;
:class:`StopRequest` carries the signal from the handler to the daemon; :func:`system_state` asks systemd
whether the whole system is going down.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

from agent.evidence.text import printable
from agent.workflow.events import SystemStop

MAX_DETAIL_CHARS = 200  # the cause goes into a signed record and a timeline line: one readable line
SYSTEMCTL_TIMEOUT_S = 1.0  # a busy systemd during a shutdown must not hold up the last segment's signing


class StopRequest(threading.Event):
    """A stop event that also remembers the signal that set it (for the stop record's cause)."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    def request(self, signum: int | None) -> None:
        if self.signum is None:  # the first signal is the cause; a second (impatient Ctrl-C) changes nothing
            self.signum = signum
        self.set()


def system_stop_cause(signum: int | None, system_state: str | None, fault: BaseException | None) -> SystemStop:
    """The cause of a stop the officer did not ask for.

    ``system_state`` is systemd's ``is-system-running`` answer (None: not known); ``stopping`` means the
    system is shutting down, so a SIGTERM then is a shutdown rather than a service stop. A fault that ends
    the daemon wins over the signal: it is what stopped the camera.
    """
    if fault is not None:
        return SystemStop("fault", _one_line(f"fatal fault: {type(fault).__name__}: {fault}"))
    if signum == signal.SIGINT:
        return SystemStop("interrupt", "interrupted (SIGINT)")
    if signum == signal.SIGTERM:
        if system_state == "stopping":
            return SystemStop("shutdown", "system shutdown (SIGTERM)")
        return SystemStop("service-stop", "service stopped (SIGTERM)")
    return SystemStop("service-stop", "daemon stopped")


def system_state() -> str | None:
    """systemd's overall state (``running``, ``stopping``, ...) when the daemon runs under systemd, else None.

    Only asked on the way out; any failure (no systemctl, no bus at a late stage of a shutdown, a timeout)
    is None: the stop is then named by its signal alone.
    """
    systemctl = shutil.which("systemctl")
    if "INVOCATION_ID" not in os.environ or systemctl is None:  # not started by systemd
        return None
    try:
        result = subprocess.run([systemctl, "is-system-running"], capture_output=True, text=True,
                                timeout=SYSTEMCTL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    state = result.stdout.strip()
    return state if state.isalpha() else None


def _one_line(text: str) -> str:
    shown = printable(text)
    return shown if len(shown) <= MAX_DETAIL_CHARS else shown[: MAX_DETAIL_CHARS - 3] + "..."
