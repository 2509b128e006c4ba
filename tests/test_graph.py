"""The recipe DAG: validation problems, execution layers, pictures, and the graph/schema/run CLI."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from fake_backend import fake_backend  # noqa: F401  (fixture)
from typer.testing import CliRunner

from orchestra import cli, terminal
from orchestra.errors import RecipeError, format_location
from orchestra.graph import build_graph, dag_problems, draw, execution_layers
from orchestra.recipe import load_recipe, recipe_from_dict

pytestmark = pytest.mark.usefixtures("fake_backend")

MODELS = {"m": {"backend": "fake", "model": "x"}}


def gen(id: str) -> dict:
    return {"id": id, "technique": "sample", "params": {"n": 2}}


def vote(id: str, *inputs: str) -> dict:
    return {"id": id, "technique": "majority_vote", "inputs": list(inputs)}


def problems_of(nodes: list[dict], **extra) -> list[tuple[str, str]]:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"name": "t", "models": MODELS, "nodes": nodes, **extra})
    return [(format_location(loc), msg) for loc, msg in info.value.problems]


def recipe_of(nodes: list[dict], **extra):
    return recipe_from_dict({"name": "t", "models": MODELS, "nodes": nodes, **extra})


# --- validation ----------------------------------------------------------------------------


def test_cycle_message_shows_the_cycle_path() -> None:
    found = problems_of([gen("g"), vote("a", "g", "c"), vote("b", "a"), vote("c", "b")])
    assert len(found) == 1
    where, msg = found[0]
    assert where == "nodes"
    path = re.search(r"cycle: (.*)$", msg).group(1).split(" -> ")
    assert path[0] == path[-1]  # closed
    assert sorted(path[:-1]) == ["a", "b", "c"]
    # each step is an edge input -> consumer: a feeds b, b feeds c, c feeds a
    steps = set(zip(path, path[1:]))
    assert steps == {("a", "b"), ("b", "c"), ("c", "a")}


def test_cycle_in_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cyc.yaml"
    path.write_text(textwrap.dedent("""\
        name: cyc
        models:
          m: {backend: fake}
        nodes:
          - {id: g, technique: sample}
          - {id: a, technique: majority_vote, inputs: [g, b]}
          - {id: b, technique: majority_vote, inputs: [a]}
        """))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert str(path) in text
    assert "nodes (line 4): the nodes form a cycle:" in text


def test_missing_input() -> None:
    found = problems_of([gen("g"), vote("v", "g", "ghost")])
    assert found == [("nodes[1].inputs[1]", "input 'ghost' is not a node of this recipe")]


def test_input_defined_later_is_fine() -> None:
    recipe = recipe_of([vote("v", "g"), gen("g")], output="v")
    assert execution_layers(recipe) == [["g"], ["v"]]


def test_self_input() -> None:
    found = problems_of([gen("g"), vote("v", "g", "v")])
    assert ("nodes[1].inputs[1]", "node 'v' lists itself as input") in found


def test_duplicate_id() -> None:
    found = problems_of([gen("g"), gen("g"), vote("v", "g")])
    assert found == [("nodes[1].id", "duplicate node id 'g' (also nodes[0])")]


def test_unreachable_node() -> None:
    found = problems_of([gen("g"), gen("lonely"), vote("v", "g")])
    assert found == [("nodes[1]", "node 'lonely' is unreachable: it does not feed the output 'v'")]


def test_node_after_output_is_unreachable() -> None:
    found = problems_of([gen("g"), vote("v", "g")], output="g")
    assert found == [("nodes[1]", "node 'v' is unreachable: it does not feed the output 'g'")]


def test_missing_output_node() -> None:
    found = problems_of([gen("g"), vote("v", "g")], output="nope")
    assert found == [("output", "output node 'nope' is not a node of this recipe")]


def test_bad_node_id() -> None:
    found = problems_of([{"id": "1 bad", "technique": "sample"}])
    assert found[0][0] == "nodes[0].id"


def test_dag_problems_empty_for_good_recipe() -> None:
    assert dag_problems(recipe_of([gen("g"), vote("v", "g")])) == []


# --- layers and graph ----------------------------------------------------------------------


DIAMOND = [gen("b_gen"), gen("a_gen"), vote("va", "a_gen"), vote("vb", "b_gen", "a_gen"), vote("final", "va", "vb")]


def test_execution_layers_order() -> None:
    recipe = recipe_of(DIAMOND)
    layers = execution_layers(recipe)
    assert layers == [["a_gen", "b_gen"], ["va", "vb"], ["final"]]
    position = {n: i for i, layer in enumerate(layers) for n in layer}
    for node in recipe.nodes:  # every input runs in an earlier layer
        assert all(position[src] < position[node.id] for src in node.inputs)


def test_build_graph_attributes() -> None:
    recipe = recipe_of(DIAMOND)
    graph = build_graph(recipe)
    assert set(graph.nodes) == {"a_gen", "b_gen", "va", "vb", "final"}
    assert set(graph.edges) == {("a_gen", "va"), ("b_gen", "vb"), ("a_gen", "vb"), ("va", "final"), ("vb", "final")}
    assert graph.nodes["va"]["technique"] == "majority_vote"
    assert graph.nodes["a_gen"]["model"] == "m"
    assert recipe.graph().edges == graph.edges


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_draw_writes_picture(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"dag{suffix}"
    written = draw(recipe_of(DIAMOND), target)
    assert written == target
    data = target.read_bytes()
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert b"<svg" in data[:2000]


# --- CLI -----------------------------------------------------------------------------------

RECIPE_YAML = """\
name: diamond
models:
  m: {backend: fake, model: x}
nodes:
  - {id: a_gen, technique: sample, params: {n: 2}}
  - {id: b_gen, technique: sample, params: {n: 2}}
  - {id: final, technique: majority_vote, inputs: [a_gen, b_gen]}
"""


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    # rich wraps at 80 columns when not on a terminal; long tmp paths would be folded.
    monkeypatch.setattr(terminal.console, "_width", 300)
    monkeypatch.setattr(terminal.errors, "_width", 300)
    return CliRunner()


def test_cli_graph_prints_nodes_edges_and_draws(tmp_path: Path, runner: CliRunner) -> None:
    recipe = tmp_path / "diamond.yaml"
    recipe.write_text(RECIPE_YAML)
    out = tmp_path / "pic.svg"
    result = runner.invoke(cli.app, ["graph", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "diamond: 3 nodes, 2 edges" in text
    for node in ("a_gen", "b_gen", "final (output)", "sample", "majority_vote"):
        assert node in text
    assert "a_gen -> final" in text and "b_gen -> final" in text
    assert out.exists() and b"<svg" in out.read_bytes()[:2000]
    assert f"wrote {out}" in text


def test_cli_graph_default_png_next_to_recipe(tmp_path: Path, runner: CliRunner) -> None:
    recipe = tmp_path / "diamond.yaml"
    recipe.write_text(RECIPE_YAML)
    result = runner.invoke(cli.app, ["graph", str(recipe)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "diamond.png").read_bytes().startswith(b"\x89PNG")


def test_cli_graph_rejects_other_picture_formats(tmp_path: Path, runner: CliRunner) -> None:
    recipe = tmp_path / "diamond.yaml"
    recipe.write_text(RECIPE_YAML)
    result = runner.invoke(cli.app, ["graph", str(recipe), "--out", str(tmp_path / "pic.txt")])
    assert result.exit_code == 2
    assert "--out must end in .png, .svg or .pdf" in result.stderr
    assert not (tmp_path / "pic.txt").exists()


def test_cli_graph_bad_recipe(tmp_path: Path, runner: CliRunner) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE_YAML.replace("inputs: [a_gen, b_gen]", "inputs: [a_gen, ghost]"))
    result = runner.invoke(cli.app, ["graph", str(recipe)])
    assert result.exit_code == 2
    assert "input 'ghost' is not a node" in result.stderr


def test_cli_schema_prints_json(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "nodes" in schema["properties"]
    assert "Node" in schema["$defs"]


def test_cli_run_bad_recipe_exits_2_with_error(tmp_path: Path, runner: CliRunner) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE_YAML.replace("technique: majority_vote", "technique: majority_vot"))
    result = runner.invoke(cli.app, ["run", str(recipe), "--no-cache", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    err = result.stderr
    assert "error:" in err
    assert str(recipe) in err
    assert "nodes[2].technique (line 7)" in err
    assert "did you mean majority_vote" in err
    assert not (tmp_path / "run").exists()  # nothing ran


def test_cli_run_missing_recipe_exits_2(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["run", str(tmp_path / "nope.yaml"), "--no-cache"])
    assert result.exit_code == 2
    assert "recipe file not found" in result.stderr
