"""Procedure profiles: one TOML file per procedure type, loaded into :class:`agent.evidence.procedure.Procedure`.

The format is documented in docs/procedure-profiles.md. The loader is strict on purpose (SPEC invariant 5): a
typo in a key would otherwise silently make a stage optional or unrecorded, so unknown keys, missing keys,
wrong types, duplicate stages and empty stage lists are refused with a ConfigError naming the file, the key
and the problem. The shipped profiles are package data, read through importlib.resources so they are found
in an installed wheel as well as in a source checkout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.evidence.fsutil import display_path
from agent.evidence.procedure import SLUG_PATTERN, Procedure, StageSpec
from firmware_config.toml_file import Keys, check_table, read_toml, short_words, value_words

PROFILE_SUFFIX = ".toml"
MAX_TITLE_CHARS = 200

# The declarations (firmware_config.toml_file): key -> (type, default); ... is required.
_PROFILE_KEYS: Keys = {
    "name": (str, ...),
    "title": (str, ...),
    "basis": (str, None),  # the rule's articles the profile implements, for people
    "continuous_recording": (bool, ...),
    "stages": (list, ...),
}
_STAGE_KEYS: Keys = {
    "name": (str, ...),
    "title": (str, ...),
    "required": (bool, ...),
    "needs_recording": (bool, ...),
}


def shipped_profiles_dir() -> Traversable:
    """The profiles folder installed with the package."""
    return resources.files("firmware_config") / "profiles"


def load_profiles(directory: Path | Traversable | None = None) -> dict[str, Procedure]:
    """Every ``*.toml`` profile in ``directory`` (default: the shipped ones), by procedure name.

    Raises ConfigError when the folder cannot be read, holds no profile, or any profile is invalid.
    """
    folder = shipped_profiles_dir() if directory is None else directory
    where = _display(folder)
    try:
        entries = sorted((e for e in folder.iterdir() if e.name.endswith(PROFILE_SUFFIX)), key=lambda e: e.name)
    except OSError as exc:
        raise ConfigError(f"profiles folder {where}: cannot be read ({exc.strerror or exc})") from None
    procedures: dict[str, Procedure] = {}
    for entry in entries:
        procedure = load_profile(entry)
        procedures[procedure.name] = procedure  # names equal file stems, so they cannot collide
    if not procedures:
        raise ConfigError(f"profiles folder {where}: holds no {PROFILE_SUFFIX} profile")
    return procedures


def load_profile(path: Path | Traversable) -> Procedure:
    """One profile file; its ``name`` must equal the file name without ``.toml``."""
    where = _display(path)
    data = read_toml(path, f"profile {where}")
    stem = path.name[: -len(PROFILE_SUFFIX)] if path.name.endswith(PROFILE_SUFFIX) else None
    return parse_profile(data, where, expected_name=stem)


def parse_profile(data: Mapping[str, Any], source: str, expected_name: str | None = None) -> Procedure:
    """Check a parsed profile and build its Procedure; ``source`` names the file in every message."""
    _check_keys(data, _PROFILE_KEYS, source, prefix="")
    name = data["name"]
    _check_slug(name, source, "name")
    if expected_name is not None and name != expected_name:
        raise ConfigError(
            f"profile {source}: key 'name': {name!r} must equal the file name ({expected_name!r}.toml), "
            "so that a procedure is found under its name"
        )
    _check_title(data["title"], source, "title")
    stage_tables = data["stages"]
    if not stage_tables:
        raise ConfigError(f"profile {source}: key 'stages': a profile needs at least one stage")
    stages: list[StageSpec] = []
    first_seen: dict[str, int] = {}
    for number, table in enumerate(stage_tables, start=1):
        key = f"stages[{number}]"
        if not isinstance(table, dict):
            raise ConfigError(f"profile {source}: key '{key}': must be a table ([[stages]]), not {value_words(table)}")
        _check_keys(table, _STAGE_KEYS, source, prefix=f"{key}.")
        stage_name = table["name"]
        _check_slug(stage_name, source, f"{key}.name")
        if stage_name in first_seen:
            raise ConfigError(
                f"profile {source}: key '{key}.name': stage {stage_name!r} appears twice "
                f"(first as stages[{first_seen[stage_name]}])"
            )
        first_seen[stage_name] = number
        _check_title(table["title"], source, f"{key}.title")
        stages.append(StageSpec(stage_name, table["title"], table["required"], table["needs_recording"]))
    return Procedure(
        name=name,
        title=data["title"],
        stages=tuple(stages),
        continuous_recording=data["continuous_recording"],
    )


def describe_profiles(procedures: Mapping[str, Procedure]) -> Iterable[str]:
    """One line per procedure and stage, for a technician checking what a device will use."""
    for procedure in procedures.values():
        mode = "recorded throughout" if procedure.continuous_recording else "recorded per stage"
        yield f"{procedure.name}: {procedure.title} ({len(procedure.stages)} stages, {mode})"
        for number, stage in enumerate(procedure.stages, start=1):
            flags = ", ".join(
                flag for flag, on in (("required", stage.required), ("needs recording", stage.needs_recording)) if on
            )
            yield f"  {number}. {stage.name}: {stage.title}" + (f" [{flags}]" if flags else "")


def _check_keys(table: Mapping[str, Any], keys: Keys, source: str, prefix: str) -> None:
    _, problems = check_table(table, keys, prefix, in_order=True)  # the first unknown key in the file
    if problems:
        wording = short_words(problems[0], {list: "an array of tables ([[stages]])"})
        raise ConfigError(f"profile {source}: key '{problems[0].key}': {wording}")


def _check_slug(value: str, source: str, key: str) -> None:
    if not SLUG_PATTERN.match(value):
        raise ConfigError(
            f"profile {source}: key '{key}': {value!r} is not a slug "
            "(lowercase letters, digits and '-', starting with a letter, at most 48 characters)"
        )


def _check_title(value: str, source: str, key: str) -> None:
    if not value.strip() or len(value) > MAX_TITLE_CHARS or not value.isprintable():
        raise ConfigError(
            f"profile {source}: key '{key}': must be printable text of 1 to {MAX_TITLE_CHARS} characters"
        )


def _display(path: Path | Traversable) -> str:
    # A Traversable from importlib.resources is a plain Path in a normal install (its str() is the file's path).
    return display_path(path) if isinstance(path, Path) else str(path)
