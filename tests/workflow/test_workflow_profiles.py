"""Procedure profiles: the shipped ones, and every kind of bad profile refused naming file, key and problem."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.evidence.procedure import Procedure, StageSpec
from firmware_config.profiles import describe_profiles, load_profile, load_profiles, shipped_profiles_dir

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name = "check"
title = "A check"
continuous_recording = false

[[stages]]
name = "arrive"
title = "Arrive"
required = true
needs_recording = true

[[stages]]
name = "leave"
title = "Leave"
required = false
needs_recording = false
"""


def write(folder: Path, text: str, name: str = "check.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_the_shipped_profiles() -> None:
    procedures = load_profiles()
    assert sorted(procedures) == ["coercive-measure", "inspection", "licensing-site-check", "penalty"]
    inspection = procedures["inspection"]
    assert inspection.stage_names() == (
        "arrival",
        "credentials-shown",
        "party-informed",
        "inspection",
        "record-signed",
        "departure",
    )
    assert inspection.continuous_recording
    assert all(stage.required and stage.needs_recording for stage in inspection.stages)
    for procedure in procedures.values():
        # Art. 25: every procedure tells the party that recording is on, and shows credentials.
        assert "party-informed" in procedure.stage_names()
        assert "credentials-shown" in procedure.stage_names()
    text = "\n".join(describe_profiles(procedures))
    assert "inspection: Inspection (6 stages, recorded throughout)" in text


def test_the_shipped_profiles_are_package_data() -> None:
    folder = shipped_profiles_dir()
    assert sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".toml")) == [
        "coercive-measure.toml",
        "inspection.toml",
        "licensing-site-check.toml",
        "penalty.toml",
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "profiles/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["firmware_config"]


def test_a_profile_folder(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    (tmp_path / "README.md").write_text("not a profile")
    procedures = load_profiles(tmp_path)
    assert procedures == {
        "check": Procedure(
            name="check",
            title="A check",
            stages=(StageSpec("arrive", "Arrive", True, True), StageSpec("leave", "Leave", False, False)),
            continuous_recording=False,
        )
    }


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (GOOD.replace('title = "A check"', 'title = "A check"\ncolour = "red"'), "colour", "unknown key"),
        (GOOD.replace("required = true", "required = true\nrequried = true"), "stages[1].requried", "unknown key"),
        (GOOD.split("[[stages]]")[0], "stages", "missing"),
        (GOOD.split("[[stages]]")[0] + "stages = []\n", "stages", "at least one stage"),
        (GOOD.replace('name = "leave"', 'name = "arrive"'), "stages[2].name", "appears twice (first as stages[1])"),
        (GOOD.replace("required = true", 'required = "yes"'), "stages[1].required",
         "must be true or false, not a string"),
        (GOOD.replace("continuous_recording = false", "continuous_recording = 1"), "continuous_recording",
         "must be true or false, not an integer"),
        (GOOD.replace('title = "A check"', "title = 5"), "title", "must be a string, not an integer"),
        (GOOD.replace("needs_recording = false\n", ""), "stages[2].needs_recording", "missing"),
        (GOOD.replace('name = "check"', 'name = "other"'), "name", "must equal the file name"),
        (GOOD.replace('name = "arrive"', 'name = "Arrive Now"'), "stages[1].name", "is not a slug"),
        (GOOD.replace('title = "Leave"', 'title = ""'), "stages[2].title", "printable text"),
        (GOOD.split("[[stages]]")[0] + 'stages = ["arrive"]\n', "stages[1]", "must be a table"),
    ],
)
def test_bad_profiles_are_refused_naming_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    for load in (lambda: load_profile(path), lambda: load_profiles(tmp_path)):
        with pytest.raises(ConfigError) as caught:
            load()
        message = str(caught.value)
        assert message.startswith(f"profile {path}: key '{key}': "), message
        assert problem in message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[[stages]\n")
    with pytest.raises(ConfigError, match=rf"profile {path}: is not valid TOML \(.*line 17"):
        load_profile(path)


def test_an_empty_or_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"profiles folder {tmp_path}: holds no .toml profile"):
        load_profiles(tmp_path)
    with pytest.raises(ConfigError, match=r"profiles folder .*/absent: cannot be read"):
        load_profiles(tmp_path / "absent")


def test_a_procedure_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="at least one stage"):
        Procedure("empty", "Empty", ())
    stage = StageSpec("a", "A", True, True)
    with pytest.raises(ConfigError, match="stage 'a' appears twice"):
        Procedure("twice", "Twice", (stage, stage))
