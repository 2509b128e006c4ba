"""Imports point down the layers: kernels → backends → core → techniques → search → entry points.

Checked on the code as it is (every import statement, lazy ones included), with the same rules
`scripts/draw_architecture.py` draws in docs/architecture.svg, so the picture and this test agree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def architecture():
    spec = importlib.util.spec_from_file_location("draw_architecture", ROOT / "scripts" / "draw_architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["draw_architecture"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def graph(architecture):
    return architecture.import_graph(ROOT)


def imports_from(graph, importer_prefix: str) -> set[str]:
    return {b for a, b in graph.edges if a == importer_prefix or a.startswith(importer_prefix + ".")}


def test_every_import_keeps_the_layer_rules(graph, architecture) -> None:
    assert graph.broken() == [], architecture.format_table(graph)


def test_kernels_import_nothing_from_the_rest_of_orchestra(graph) -> None:
    assert {m for m in imports_from(graph, "orchestra.kernels") if not m.startswith("orchestra.kernels")} == set()


def test_backends_import_neither_the_recipe_nor_techniques(graph) -> None:
    imported = imports_from(graph, "orchestra.backends")
    forbidden = {"orchestra.recipe", "orchestra.executor", "orchestra.context", "orchestra.technique"}
    assert imported & forbidden == set()
    assert not any(m.startswith(("orchestra.techniques", "orchestra.search")) for m in imported)


def test_the_core_reaches_techniques_search_and_concrete_backends_only_through_registries(graph, architecture) -> None:
    core = [(a, b) for a, b in graph.edges if architecture.layer_of(a) == "core"]
    assert [(a, b) for a, b in core if b.startswith(("orchestra.techniques", "orchestra.search"))] == []
    concrete = [(a, b) for a, b in core if architecture.layer_of(b) == "backends" and b not in architecture.BACKEND_FACE]
    assert concrete == []


def test_the_rules_catch_a_wrong_way_import(architecture) -> None:
    """The checks above could fail: each kind of wrong import is recognised."""
    assert architecture.rule_broken("orchestra.kernels.sparse_mlp", "orchestra.paths")
    assert architecture.rule_broken("orchestra.backends.local", "orchestra.recipe")
    assert architecture.rule_broken("orchestra.executor", "orchestra.techniques.sample")
    assert architecture.rule_broken("orchestra.executor", "orchestra.backends.local")
    assert architecture.rule_broken("orchestra.executor", "orchestra.backends") is None


def test_the_picture_is_drawn_from_the_code(graph, architecture, tmp_path: Path) -> None:
    out = tmp_path / "architecture.svg"
    architecture.draw(graph, out)
    svg = out.read_text()
    assert svg.startswith("<?xml") and all(layer in svg for layer in architecture.LAYERS)
