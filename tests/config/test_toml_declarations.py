"""The one declaration mechanism every config reader uses (firmware_config/toml_file.py), tested without files."""

from __future__ import annotations

import re

import pytest

from agent.errors import ConfigError
from firmware_config.toml_file import FILE_PATH, PRINTABLE, Keys, Text, check_table, short_words, typed_tables

KEYS: Keys = {"n": (int, ...), "ratio": ((int, float), 0.5), "flag": (bool, False)}


def test_check_table_fills_defaults_and_finds_every_problem_in_order() -> None:
    assert check_table({"n": 3}, KEYS, "t.") == ({"n": 3, "ratio": 0.5, "flag": False}, [])
    values, problems = check_table({"zz": 1, "aa": 2, "ratio": True, "flag": 1}, KEYS, "t.", {"t.ratio": (0, 1)})
    assert [(p.key, p.what) for p in problems] == [
        ("t.aa", "unknown"), ("t.zz", "unknown"), ("t.n", "missing"), ("t.ratio", "type"), ("t.flag", "type"),
    ]
    assert values == {}  # a key with a problem is left out
    _, in_file_order = check_table({"zz": 1, "aa": 2, "n": 1}, KEYS, in_order=True)
    assert [p.key for p in in_file_order] == ["zz", "aa"]


def test_the_two_wordings_of_a_problem() -> None:
    _, problems = check_table({"n": True, "ratio": 7, "x": 0}, KEYS, "t.", {"t.ratio": (0, 1)})
    assert [short_words(p) for p in problems] == [
        "unknown key (allowed: n, ratio, flag)", "must be an integer, not a boolean", "7 is outside 0..1",
    ]
    with pytest.raises(ConfigError, match=r"^f: key 't.ratio': value 7: expected 0..1$"):
        typed_tables({"t": {"n": 1, "ratio": 7}}, {"t": KEYS}, {"t.ratio": (0, 1)}, "f")


def test_string_rules_are_checked_after_every_table_is_typed_in_declaration_order() -> None:
    texts = {"t.name": Text("a name", pattern=re.compile(r"[a-z]+\Z")), "t.kind": Text(choices=("a", "b"))}
    schema = {"t": {"name": (str, ...), "kind": (str, "a")}}
    assert typed_tables({"t": {"name": "ok"}}, schema, {}, "f", texts=texts)["t"] == {"name": "ok", "kind": "a"}
    with pytest.raises(ConfigError, match=r"^f: key 't.name': value \"Bad\": expected a name$"):
        typed_tables({"t": {"name": "Bad", "kind": "c"}}, schema, {}, "f", texts=texts)
    with pytest.raises(ConfigError, match=r"^f: key 't.kind': value \"c\": expected one of a, b$"):
        typed_tables({"t": {"name": "ok", "kind": "c"}}, schema, {}, "f", texts=texts)
    assert not PRINTABLE.accepts("") and not PRINTABLE.accepts(" ") and not PRINTABLE.accepts("a\nb")
    assert FILE_PATH.accepts("") and not FILE_PATH.accepts("a\tb") and FILE_PATH.accepts("/etc/ca.pem")
