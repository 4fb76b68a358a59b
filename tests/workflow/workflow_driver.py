"""Drives the pure workflow machine in tests: presses at advancing times, the effects, and a ledger of bodies."""

from __future__ import annotations

from typing import Any

from agent.evidence.procedure import Procedure, StageSpec
from agent.workflow.events import (
    Button,
    Effect,
    ErrorEffect,
    Event,
    Feedback,
    FeedbackEffect,
    Press,
    RecordEffect,
    RecordingEffect,
    Tick,
)
from agent.workflow.machine import step
from agent.workflow.state import WorkflowConfig, WorkflowState
from firmware_config.profiles import load_profiles

DEVICE = "dev-0001"
OFFICER = "A1234"
WINDOW_US = 15_000_000
STEP_US = 100_000  # presses are 0.1 s apart unless a test says otherwise

# A procedure recorded per stage, to test when the machine switches the camera on by itself.
WALK = Procedure(
    name="walk",
    title="Walk-up check",
    stages=(
        StageSpec("approach", "Approach", required=True, needs_recording=False),
        StageSpec("talk", "Talk", required=True, needs_recording=True),
        StageSpec("note", "Note", required=False, needs_recording=False),
        StageSpec("sign", "Sign", required=True, needs_recording=False),
    ),
    continuous_recording=False,
)

R, S, M = Button.RECORD, Button.STAGE, Button.MARK


def make_config(**changes: Any) -> WorkflowConfig:
    procedures = {**load_profiles(), "walk": WALK}
    settings: dict[str, Any] = {"procedures": procedures, "device_id": DEVICE, "officer_id": OFFICER}
    settings.update(changes)
    return WorkflowConfig(**settings)


class Driver:
    """A state, a clock in microseconds, and every record body the machine asked to append so far."""

    def __init__(self, config: WorkflowConfig, state: WorkflowState | None = None, now_us: int = 1_000_000) -> None:
        self.config = config
        self.state = state or WorkflowState()
        self.now_us = now_us
        self.records: list[tuple[str, dict[str, Any]]] = []

    def send(self, event: Event) -> list[Effect]:
        self.state, effects = step(self.state, event, self.config)
        self.records.extend((e.record_type, dict(e.body)) for e in effects if isinstance(e, RecordEffect))
        return effects

    def press(self, button: Button, long: bool = False, at_us: int | None = None) -> list[Effect]:
        self.now_us = self.now_us + STEP_US if at_us is None else at_us
        return self.send(Press(button, long, self.now_us))

    def tick(self, at_us: int) -> list[Effect]:
        self.now_us = at_us
        return self.send(Tick(at_us))


def patterns(effects: list[Effect]) -> list[Feedback]:
    return [e.pattern for e in effects if isinstance(e, FeedbackEffect)]


def records(effects: list[Effect]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.record_type, dict(e.body)) for e in effects if isinstance(e, RecordEffect)]


def recording_changes(effects: list[Effect]) -> list[RecordingEffect]:
    return [e for e in effects if isinstance(e, RecordingEffect)]


def errors(effects: list[Effect]) -> list[str]:
    return [e.message for e in effects if isinstance(e, ErrorEffect)]


def kinds(effects: list[Effect]) -> list[str]:
    """A compact picture of the effects in order: feedback names, record types (event kinds), rec on/off."""
    out = []
    for effect in effects:
        if isinstance(effect, FeedbackEffect):
            out.append(effect.pattern.name if effect.count == 1 else f"{effect.pattern.name}x{effect.count}")
        elif isinstance(effect, RecordEffect):
            kind = effect.body.get("kind")
            out.append(f"record:{effect.record_type}" + (f":{kind}" if kind else ""))
        elif isinstance(effect, RecordingEffect):
            out.append("rec:on" if effect.on else "rec:off")
        else:
            out.append("error")
    return out
