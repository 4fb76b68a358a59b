"""Procedures and their stages: what a case of each procedure type must go through (SPEC art. 10-13, 24, 25).

A :class:`Procedure` is loaded from a profile file (``firmware_config/profiles/*.toml``, read by
``firmware_config.profiles``) and is immutable: a case keeps the procedure it was opened with, and the
``case-open`` record carries the stage list, so a ledger describes its own cases even after a profile changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError

# Procedure and stage names are slugs: they go into ledger records and onto command lines.
SLUG_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,47}\Z")


@dataclass(frozen=True)
class StageSpec:
    """One named step of a procedure."""

    name: str  # slug, unique within its procedure
    title: str  # what the officer does, for people
    required: bool  # the station reports a case that lacks it
    needs_recording: bool  # the camera must be on while it happens

    def to_body(self) -> dict[str, Any]:
        """The stage as it is written into a ``case-open`` record."""
        return {
            "name": self.name,
            "title": self.title,
            "required": self.required,
            "needs_recording": self.needs_recording,
        }


@dataclass(frozen=True)
class Procedure:
    """A procedure type: its stages in order, and whether the whole case is to be recorded without a break."""

    name: str
    title: str
    stages: tuple[StageSpec, ...]
    # True where the rule demands recording from start to finish (art. 11(2): "no interruption during the
    # inspection"): opening the case and resuming it after a restart switch the camera on.
    continuous_recording: bool = False

    def __post_init__(self) -> None:
        # The loader checks all of this with file and key in the message; these checks keep a Procedure
        # built in code (tests, the ledger's own stage list) from being malformed.
        if not self.stages:
            raise ConfigError(f"procedure {self.name!r}: key 'stages': a procedure needs at least one stage")
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ConfigError(f"procedure {self.name!r}: key 'stages': stage {stage.name!r} appears twice")
            seen.add(stage.name)

    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def index_of(self, stage_name: str) -> int | None:
        for index, stage in enumerate(self.stages):
            if stage.name == stage_name:
                return index
        return None

    def required_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages if stage.required)


def procedure_from_case_open(body: Mapping[str, Any]) -> Procedure | None:
    """The procedure a ``case-open`` record carries in its ``stages`` field, or None when it has none usable.

    Only well-formed stage lists are accepted; anything else (an older or foreign record) returns None and
    the caller falls back to the loaded profiles.
    """
    stages = body.get("stages")
    name = body.get("procedure")
    if not isinstance(stages, list) or not stages or not isinstance(name, str):
        return None
    specs: list[StageSpec] = []
    for item in stages:
        if not isinstance(item, dict):
            return None
        stage_name, title = item.get("name"), item.get("title", item.get("name"))
        required, needs = item.get("required"), item.get("needs_recording")
        if not (
            isinstance(stage_name, str)
            and isinstance(title, str)
            and isinstance(required, bool)
            and isinstance(needs, bool)
        ):
            return None
        specs.append(StageSpec(stage_name, title, required, needs))
    title = body.get("title", name)
    continuous = body.get("continuous_recording", False)
    try:
        return Procedure(
            name=name,
            title=title if isinstance(title, str) else name,
            stages=tuple(specs),
            continuous_recording=continuous if isinstance(continuous, bool) else False,
        )
    except ConfigError:
        return None
