"""Text that came from a ledger, a peer or a file, shown to a person: the one rule every command shares.

In the core because the device's commands, the station's and provisioning's all print what a ledger or a
hostile peer wrote, and none of them may import another's command-line module.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """Text safe for a terminal: control characters shown as escapes, never executed."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
