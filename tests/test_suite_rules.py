"""The test suite's own rules, checked so that a new test cannot quietly break them.

A test that returns early or swallows an import error passes without checking
anything, and a real-model test left to `dtype: auto` gives different tokens on
different machines. Both have happened here; these checks keep them out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orchestra.backends import ModelSpec

TESTS = Path(__file__).resolve().parent


def test_a_real_model_left_to_dtype_auto_fails_its_test_before_loading() -> None:
    from orchestra.backends.local import LocalBackend

    with pytest.raises(pytest.fail.Exception, match="dtype: float32"):
        LocalBackend(ModelSpec())  # conftest's guard fails before any weights are read


class _EarlyExits(ast.NodeVisitor):
    """`return` statements and exception handlers that do nothing, in one test function's own body
    (functions nested in it are helpers: their returns are theirs)."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        pass  # a nested helper

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_Lambda = visit_FunctionDef  # type: ignore[assignment]

    def visit_Return(self, node: ast.Return) -> None:
        self.found.append((node.lineno, "return"))

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if all(isinstance(statement, (ast.Pass, ast.Return)) for statement in node.body):
            self.found.append((node.lineno, "except that only passes or returns"))
        self.generic_visit(node)


def _early_exits_in_tests(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            visitor = _EarlyExits()
            for statement in node.body:
                visitor.visit(statement)
            found += visitor.found
    return found


def test_the_early_exit_check_sees_what_it_looks_for() -> None:
    source = (
        "def test_a():\n"
        "    try:\n        import x\n    except ImportError:\n        return\n"
        "def test_b():\n    if True:\n        return\n    def helper():\n        return 1\n"
        "def test_c():\n    try:\n        pass\n    except OSError:\n        pass\n"
    )
    assert _early_exits_in_tests(source) == [
        (4, "except that only passes or returns"), (5, "return"), (8, "return"), (14, "except that only passes or returns"),
    ]


def test_no_test_returns_early_or_swallows_an_error() -> None:
    """A test that cannot run says why with pytest.skip (or a skipif mark); it never just returns."""
    found = [
        f"{path.name}:{line}: {what}"
        for path in sorted(TESTS.glob("test_*.py"))
        for line, what in _early_exits_in_tests(path.read_text())
    ]
    assert found == []
