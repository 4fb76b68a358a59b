"""The encoding check's quick pass never disagrees with the named walk it stands in front of."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import EncodingError
from agent.evidence import encoding
from agent.evidence.encoding import MAX_DEPTH, MAX_SAFE_INTEGER, check_value

keys = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), st.text(max_size=4), st.integers(0, 3))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2 * MAX_SAFE_INTEGER, 2 * MAX_SAFE_INTEGER),
    st.text(st.characters(blacklist_categories=()), max_size=6), st.floats(allow_nan=False), st.binary(max_size=2),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(keys, inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=3).map(MappingProxyType)),
    max_leaves=25,
)


def outcome(check: Any, value: Any) -> str | None:
    try:
        check(value)
    except EncodingError as exc:
        return str(exc)
    return None


@settings(max_examples=400, deadline=None)
@given(values)
def test_quick_pass_agrees_with_the_named_walk(value: Any) -> None:
    assert outcome(check_value, value) == outcome(lambda v: encoding._check_named(v, "record", 1), value)


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "message"), [
    ({"ok": {"Bad": 1}}, "record.ok: key 'Bad' is not"),
    ({"a": [1, 2.5]}, "record.a[1]: floats are not allowed"),
    ({"a": "x\ud800"}, "record.a: string holds a UTF-16 surrogate"),
    ({"n": MAX_SAFE_INTEGER + 1}, f"record.n: integer {MAX_SAFE_INTEGER + 1} is outside"),
    (nested(MAX_DEPTH + 1), "nested deeper than"),
])
def test_faults_are_still_named_where_they_are(value: Any, message: str) -> None:
    with pytest.raises(EncodingError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_value(value)
    assert check_value(nested(MAX_DEPTH)) is None
