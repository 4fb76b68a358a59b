"""Scenario files: the shipped ones load; a bad one is refused naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.scenario import PRESS_SECONDS, load_scenario
from agent.workflow.events import Button

SHIPPED = Path(__file__).resolve().parent.parent / "firmware_config" / "scenarios"


def test_shipped_scenarios_load_in_time_order() -> None:
    names = sorted(p.name for p in SHIPPED.glob("*.toml"))
    assert names == ["complete-inspection.toml", "refused-stop.toml", "retention-incident.toml"]
    scenario = load_scenario(SHIPPED / "complete-inspection.toml")
    assert scenario.name == "complete inspection" and scenario.seconds == 24.0
    assert scenario.presses[0].button is Button.STAGE and scenario.presses[0].hold == 1.2  # opens the case
    assert scenario.presses[1].hold == PRESS_SECONDS
    assert [p.at for p in scenario.presses] == sorted(p.at for p in scenario.presses)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[scenario]\nname = "x"\nseconds = 5\nspeed = 2\n', "scenario.speed", "unknown key"),
        ('[scenario]\nname = "x"\n', "scenario.seconds", "must be a number"),
        ('[scenario]\nname = "x"\nseconds = 5\n[[press]]\nat = 1\nbutton = "power"\n', "press[0].button",
         "'power' is not one of record, stage, mark"),
        ('[scenario]\nname = "x"\nseconds = 5\n[[press]]\nat = 4.9\nbutton = "mark"\nhold = 1\n', "press[0]",
         "ends after scenario.seconds"),
        ('[scenario]\nname = "x"\nseconds = 9\n[[press]]\nat = 1\nbutton = "mark"\nhold = 2\n'
         '[[press]]\nat = 2\nbutton = "stage"\n', "press", "starts before the one at 1.0 s is released"),
        ('[scenario]\nname = "x"\nseconds = 5\n[[press]]\nat = 1\nbutton = "mark"\ncolour = 1\n', "press[0].colour",
         "unknown key"),
        ("[scenario\n", None, "is not valid TOML"),
    ],
)
def test_bad_scenarios_are_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str | None, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    if key is not None:
        assert f"key '{key}'" in message, message
    assert problem in message, message


def test_a_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file$"):
        load_scenario(tmp_path / "absent.toml")
