"""Where the receiver lets a test inject a fault: a hook passed in, never read from the environment.

``Receiver.open(..., faults=...)`` calls ``faults.at(point, topic)`` at each point below. The station's own
commands pass nothing, and the default does nothing; the crash and set-aside tests pass a hook that raises
(a receiver bug a message triggers) or kills the process (a power cut) there (tests/station/faulty_serve.py).
"""

from __future__ import annotations

from typing import Final, Protocol

# Before a message is handled (inside its batch): a hook raising here is a bug that message triggers.
ON_MESSAGE: Final = "message"
# After the batch's commit, before any reply leaves: records that advanced a chain, a file stored.
AFTER_RECORDS: Final = "after-records"
AFTER_STORE: Final = "after-store"


class FaultPoints(Protocol):
    def at(self, point: str, topic: str) -> None:
        """Called at ``point`` for the message on ``topic``; may raise or end the process."""


class NoFaults:
    """The default: nothing happens at any point."""

    def at(self, point: str, topic: str) -> None:
        return None
