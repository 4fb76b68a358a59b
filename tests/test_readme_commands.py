"""README's command table shows what a user must type: every subcommand of every console script has a row,
and that row names each of its required flags; and no flag is hidden from --help."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARSERS = {
    "bodycam-agent": "agent.cli",
    "bodycam-verify": "agent.verify_cli",
    "bodycam-sync": "sync.uploader.cli",
    "bodycam-station": "sync.station.cli",
    "bodycam-provision": "firmware_config.provision_cli",
}


def commands() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """(program and subcommand words, parser) for every leaf command of every console script."""

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for sub in subs:
            for name, child in sub.choices.items():
                yield from walk(child, [*path, name])

    for program, module in PARSERS.items():
        yield from walk(importlib.import_module(module).build_parser(), [program])


def table_commands() -> list[str]:
    """The command cell of README's table, split at " / " into commands; one without its program's name
    takes the one before it (``show-key`` after ``bodycam-provision create-key``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Commands"):text.index("## Layout")]
    found: list[str] = []
    for row in table.splitlines():
        cells = re.split(r"(?<!\\)\|", row)
        if len(cells) < 3 or not cells[1].strip().startswith("`bodycam-"):
            continue
        program = ""
        for part in cells[1].split(" / "):
            command = part.strip().strip("`").replace("\\|", " ")
            if command.startswith("bodycam-"):
                program = command.split()[0]
            else:
                command = f"{program} {command}"
            found.append(command)
    return found


def words(command: str) -> list[str]:
    """The command words of a table command: not flags, not placeholders (FILE, [--json], PATH])."""
    return [w for w in command.split() if not w.startswith(("-", "[")) and not w.endswith("]") and not w.isupper()]


def rows_for(path: list[str], table: list[str]) -> list[str]:
    out = []
    for command in table:
        found = words(command)
        if found[:1] != path[:1] or (len(path) > 1 and found[1:2] != path[1:2]):
            continue
        if len(path) > 2 and path[2] not in found[2:]:
            continue
        out.append(command)
    return out


COMMANDS = list(commands())


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_a_row_naming_its_required_flags(path: list[str], parser: argparse.ArgumentParser) -> None:
    rows = rows_for(path, table_commands())
    assert rows, f"README's command table has no row for {' '.join(path)}"
    required = [a.option_strings[-1] for a in parser._actions if a.option_strings and a.required]
    for flag in required:
        assert any(re.search(rf"{re.escape(flag)}\b", row) for row in rows), (
            f"README's row for {' '.join(path)} leaves out the required {flag}: {rows}")


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_flag_is_in_help(path: list[str], parser: argparse.ArgumentParser) -> None:
    hidden = [a.option_strings for a in parser._actions if a.option_strings and a.help == argparse.SUPPRESS]
    assert not hidden, f"{' '.join(path)}: flags hidden from --help: {hidden}"
    text = parser.format_help()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text, f"{' '.join(path)} --help does not show {flag}"
