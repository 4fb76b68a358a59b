"""What every console script's command line shares: wrong arguments end in one line and exit 2, and device
ids are checked where they are typed."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from agent.evidence.record import DEVICE_ID_PATTERN

EXIT_USAGE = 2


class UsageParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the program, then exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def device_id_arg(text: str) -> str:
    """argparse ``type=`` for a device id."""
    if not DEVICE_ID_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"device id {text!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return text


def silence_closed_stdout() -> None:
    """After a BrokenPipeError on stdout (the reader went away, as ``| head`` does): point stdout at
    /dev/null, so that the interpreter's last flush at exit prints no second error either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
