"""The size rule of the developers' guide, checked on the code: no production module over 500 lines, no
function (or method) over 60.

A function's length is ``end_lineno - lineno + 1`` as ``ast`` gives it (its decorators not counted, its
docstring and comments counted). ``KNOWN_LONG_FUNCTIONS`` lists the functions still over the limit, each with
its exact length; the test fails on a new one, and on a listed one that changed or is gone, so the list only
ever shrinks (remove an entry when its function is brought under the limit).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "sync", "firmware_config")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

# (module path, qualified function name) -> its length today. Issue 13: being shrunk on another branch.
KNOWN_LONG_FUNCTIONS: dict[tuple[str, str], int] = {}


def production_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def function_lengths(tree: ast.AST, prefix: str = "") -> dict[str, int]:
    """Every function and method in ``tree`` (nested ones too) by qualified name, with its length."""
    found: dict[str, int] = {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                found[name] = node.end_lineno - node.lineno + 1
            found.update(function_lengths(node, f"{name}."))
        else:
            found.update(function_lengths(node, prefix))
    return found


def long_functions() -> dict[tuple[str, str], int]:
    found = {}
    for path in production_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        relative = path.relative_to(ROOT).as_posix()
        found.update({(relative, name): length for name, length in function_lengths(tree).items()
                      if length > MAX_FUNCTION_LINES})
    return found


def test_no_production_module_is_over_500_lines() -> None:
    modules = production_modules()
    assert len(modules) > 50  # the packages were found
    too_long = {path.relative_to(ROOT).as_posix(): n for path in modules
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: split them"


def test_no_function_is_over_60_lines_beyond_the_known_ones() -> None:
    found = long_functions()
    new = {key: n for key, n in found.items() if key not in KNOWN_LONG_FUNCTIONS}
    assert new == {}, f"functions over {MAX_FUNCTION_LINES} lines: split them"
    changed = {key: (n, found.get(key)) for key, n in KNOWN_LONG_FUNCTIONS.items() if found.get(key) != n}
    assert changed == {}, "KNOWN_LONG_FUNCTIONS is out of date (listed length, length now): update or remove them"


def test_function_lengths_counts_methods_and_nested_functions() -> None:
    source = ("class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n\n\n"
              "async def f():\n    pass\n")
    assert function_lengths(ast.parse(source)) == {"A.m": 4, "A.m.inner": 2, "f": 2}
