"""The project's one error hierarchy.

Every message names the object it is about (a file, a record's sequence number, a config key) so that a
technician or an auditor can act on it without a traceback.
"""

from __future__ import annotations


class BodycamError(Exception):
    """Base of every error this project raises on purpose."""


class UsageError(BodycamError):
    """A command was called wrongly or its input cannot be read (CLI exit code 2)."""


class ConfigError(BodycamError):
    """A configuration or profile file is invalid; the message names the file, the key and the problem."""


class EncodingError(BodycamError):
    """A value cannot be put into (or read back from) the canonical record encoding."""


class RecordFormatError(BodycamError):
    """A ledger line is not a well-formed record."""


class KeyFileError(BodycamError):
    """A key file is missing, unreadable, malformed or has unsafe permissions."""


class LedgerError(BodycamError):
    """The ledger cannot be opened or appended to; nothing was written by the failed call."""


class LedgerBusyError(LedgerError):
    """The ledger is locked by another writer (the running agent, or another tool); retry later or go through it."""


class LedgerCorruptError(LedgerError):
    """The ledger holds damage that is not a torn tail; it is reported, never repaired."""


class StoreError(BodycamError):
    """A store folder is missing, unreadable or not a store."""


class CameraError(BodycamError):
    """A camera backend cannot be opened or fails while running."""


class VerificationError(BodycamError):
    """Evidence failed verification. The one error type verification raises.

    ``problems`` lists every problem found, each naming its record and file.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class ProtocolError(BodycamError):
    """A sync message (topic, payload or acknowledgement) is malformed, too large or not allowed here."""


class RefusedError(BodycamError):
    """The device refuses an operation in its current state (an officer change while a case is open); nothing
    changed, and the same request may succeed later."""


class SelfTestError(BodycamError):
    """The start-up self-test failed: the device is not fit to record and does not say it is ready.

    The message is the one-line summary ("self-test failed: store: ..."); the agent exits with status 3,
    which its systemd unit does not restart (SPEC art. 26: a faulty device is taken out of use at once)."""
