"""Recipe schema: YAML loading, errors that say where (file, field path, line), Python parity."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from fake_backend import fake_backend  # noqa: F401  (fixture)

from orchestra.budget import Budget, Limits
from orchestra.errors import RecipeError, format_location
from orchestra.backends import ModelSpec
from orchestra.recipe import Node, Recipe, load_recipe, recipe_from_dict

pytestmark = pytest.mark.usefixtures("fake_backend")


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(path: Path) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value


def assert_located(err: RecipeError, path: Path, field: str, line: int, *words: str) -> None:
    """The rendered message names the file, and a row names the field path, its line and the words."""
    text = str(err)
    assert str(path) in text.splitlines()[0]
    rows = [row for row in text.splitlines()[1:] if row.strip().startswith(f"{field} ")]
    assert rows, f"no row for {field!r} in:\n{text}"
    assert any(f"(line {line})" in row and all(w in row for w in words) for row in rows), text


GOOD = """
name: good
description: sample then vote
models:
  m: {backend: fake, model: fake-model}
budget:
  per_problem: {completion_tokens: 500}
seed: 7
nodes:
  - id: gen
    technique: sample
    params: {n: 4, temperature: 0.5, max_tokens: 32}
  - id: vote
    technique: majority_vote
    inputs: [gen]
output: vote
"""


def test_good_recipe_loads(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.name == "good"
    assert recipe.output_node == "vote"
    assert recipe.models["m"] == ModelSpec(backend="fake", model="fake-model")
    assert recipe.budget.per_problem.completion_tokens == 500
    assert [n.id for n in recipe.nodes] == ["gen", "vote"]
    assert recipe.node("vote").inputs == ("gen",)
    assert recipe.model_of(recipe.node("vote")) == "m"  # the only model is every node's default
    assert Recipe.from_yaml(tmp_path / "recipe.yaml") == recipe


def test_output_defaults_to_last_node(tmp_path: Path) -> None:
    text = GOOD.replace("output: vote\n", "")
    assert load_recipe(write(tmp_path, text)).output_node == "vote"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


# --- schema errors, each located -----------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("seed: 7\n", "seed: 7\nmodles: {}\n"))
    err = load_error(path)
    assert err.problems == [(("modles",), "unknown key")]
    assert_located(err, path, "modles", 8, "unknown key")


def test_unknown_node_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    inputs: [gen]\n", "    inputs: [gen]\n    prams: {}\n"))
    err = load_error(path)
    assert_located(err, path, "nodes[1].prams", 15, "unknown key")


def test_unknown_model_spec_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("{backend: fake, model: fake-model}", "{backend: fake, modle: x}"))
    assert_located(load_error(path), path, "models.m.modle", 4, "unknown key")


def test_unknown_technique_suggests_closest_names(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("technique: majority_vote", "technique: majority_vot"))
    err = load_error(path)
    assert_located(err, path, "nodes[1].technique", 13, "unknown technique 'majority_vot'", "did you mean majority_vote")


def test_unknown_technique_far_from_any_name_lists_known(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("technique: majority_vote", "technique: zzzzzzzz"))
    err = load_error(path)
    assert "did you mean" not in str(err)
    assert_located(err, path, "nodes[1].technique", 13, "known:", "majority_vote", "sample")


def test_wrong_param_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        models:
          m: {backend: fake, model: x}
        nodes:
          - id: gen
            technique: sample
            params:
              temperature: 0.5
              n: eight
          - id: vote
            technique: majority_vote
            inputs: [gen]
        """,
    )
    err = load_error(path)
    assert [loc for loc, _ in err.problems] == [("nodes", 0, "params", "n")]
    assert_located(err, path, "nodes[0].params.n", 9, "valid integer")


def test_param_out_of_range_and_unknown_param(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        models:
          m: {backend: fake, model: x}
        nodes:
          - id: gen
            technique: sample
            params:
              n: 0
              temprature: 0.5
        """,
    )
    err = load_error(path)
    assert_located(err, path, "nodes[0].params.n", 8, "greater than or equal to 1")
    assert_located(err, path, "nodes[0].params.temprature", 9)


def test_undefined_model_alias(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    params: {n: 4", "    model: big\n    params: {n: 4"))
    err = load_error(path)
    assert_located(err, path, "nodes[0].model", 11, "'big' is not defined", "defined: m")


def test_node_without_model_when_several_are_defined(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("  m: {backend: fake, model: fake-model}\n", "  m: {backend: fake, model: a}\n  m2: {backend: fake, model: b}\n"),
    )
    err = load_error(path)
    # `sample` needs a model; majority_vote (no model needed) is fine without one.
    assert [loc for loc, _ in err.problems] == [("nodes", 0, "model")]
    assert_located(err, path, "nodes[0].model", 10, "needs a model", "name one")


def test_unknown_backend(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("backend: fake", "backend: fakee"))
    assert_located(load_error(path), path, "models.m.backend", 4, "unknown backend 'fakee'", "fake")


def test_technique_needing_inputs_given_none(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    inputs: [gen]\n", ""))
    err = load_error(path)
    assert_located(err, path, "nodes[1].inputs", 12, "'majority_vote' needs at least 1 input")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nnodes:\n  - {id: a, technique: sample\n  - id: b\n")
    err = load_error(path)
    text = str(err)
    assert str(path) in text
    assert "<recipe>" in text and "not valid YAML" in text
    assert "line 4" in text  # PyYAML's own mark


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    err = load_error(path)
    assert str(path) in str(err)
    assert "a recipe is a YAML mapping" in str(err)
    assert err.problems[0][0] == ()


def test_several_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        models:
          m: {backend: fake, model: x}
        nodes:
          - id: gen
            technique: sample
            model: nope
            params:
              n: eight
          - id: vote
            technique: majority_vot
            inputs: [gen, ghost]
        """,
    )
    err = load_error(path)
    assert str(err).splitlines()[0] == f"{path}: 4 problems"
    assert_located(err, path, "nodes[0].params.n", 9, "valid integer")
    assert_located(err, path, "nodes[0].model", 7, "'nope' is not defined")
    assert_located(err, path, "nodes[1].technique", 11, "did you mean majority_vote")
    assert_located(err, path, "nodes[1].inputs[1]", 12, "'ghost' is not a node")


def test_several_structural_problems_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        colour: red
        models:
          m: {backend: fake, model: x, dtype: float8}
        nodes:
          - id: gen
            technique: sample
            extra: 1
        """,
    )
    err = load_error(path)
    assert_located(err, path, "colour", 2, "unknown key")
    assert_located(err, path, "models.m.dtype", 4)
    assert_located(err, path, "nodes[0].extra", 8, "unknown key")


def test_bad_only_node_is_not_also_reported_as_missing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        models:
          m: {backend: fake, model: x}
        nodes:
          - id: gen
            technique: sample
            extra: 1
        """,
    )
    err = load_error(path)
    assert [format_location(loc) for loc, _ in err.problems] == ["nodes[0].extra"]


def test_empty_nodes_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nmodels:\n  m: {backend: fake}\nnodes: []\n")
    assert_located(load_error(path), path, "nodes", 4, "at least 1 item")


def test_unknown_key_and_unknown_technique_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("seed: 7\n", "seed: 7\nbogus: 1\n").replace("majority_vote", "majority_vot"))
    err = load_error(path)
    fields = {format_location(loc) for loc, _ in err.problems}
    assert {"bogus", "nodes[1].technique"} <= fields


def test_unknown_scorer_in_best_of_n_is_a_recipe_error(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("technique: majority_vote", "technique: best_of_n\n    params: {scorer: mean_logprb}"))
    err = load_error(path)
    assert_located(err, path, "nodes[1].params.scorer", 14, "mean_logprob")


def test_unknown_scorer_in_score_node_is_a_recipe_error(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("technique: majority_vote", "technique: score\n    params: {scorer: tsk}"))
    err = load_error(path)
    assert_located(err, path, "nodes[1].params.scorer", 14, "unknown scorer 'tsk'", "did you mean task")


def test_format_location() -> None:
    assert format_location(("nodes", 1, "params", "n")) == "nodes[1].params.n"
    assert format_location(("models", "m", "backend")) == "models.m.backend"
    assert format_location(("nodes", 0, "inputs", 2)) == "nodes[0].inputs[2]"
    assert format_location(()) == "<recipe>"


def test_recipe_from_dict_without_file_says_recipe() -> None:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"name": "t", "nodes": [{"id": "a", "technique": "nope", "model": "m"}],
                          "models": {"m": {"backend": "fake"}}})
    assert str(info.value).startswith("recipe: 1 problem")
    assert "nodes[0].technique" in str(info.value)


# --- Python parity, JSON schema, YAML round trip -------------------------------------------


def python_recipe() -> Recipe:
    return Recipe(
        name="good",
        description="sample then vote",
        models={"m": ModelSpec(backend="fake", model="fake-model")},
        budget=Budget(per_problem=Limits(completion_tokens=500)),
        seed=7,
        nodes=(
            Node(id="gen", technique="sample", params={"n": 4, "temperature": 0.5, "max_tokens": 32}),
            Node(id="vote", technique="majority_vote", inputs=("gen",)),
        ),
        output="vote",
    )


def test_python_recipe_equals_yaml_recipe(tmp_path: Path) -> None:
    from_yaml = load_recipe(write(tmp_path, GOOD))
    built = python_recipe()
    assert built == from_yaml
    assert built.fingerprint() == from_yaml.fingerprint()


def test_python_recipe_is_validated_too() -> None:
    with pytest.raises(RecipeError) as info:
        Recipe(name="t", models={"m": ModelSpec(backend="fake")},
               nodes=(Node(id="a", technique="majority_vot", inputs=("b",)),))
    fields = {format_location(loc) for loc, _ in info.value.problems}
    assert {"nodes[0].technique", "nodes[0].inputs[0]"} <= fields


def test_fingerprint_ignores_description_but_not_params() -> None:
    base = python_recipe()
    assert base.model_copy(update={"description": "other"}).fingerprint() == base.fingerprint()
    changed = Recipe.model_validate({**base.model_dump(), "seed": 8})
    assert changed.fingerprint() != base.fingerprint()


def test_json_schema() -> None:
    schema = Recipe.model_json_schema()
    json.dumps(schema)  # serialisable
    assert schema["type"] == "object"
    assert {"name", "nodes"} <= set(schema["required"])
    assert {"name", "models", "budget", "seed", "nodes", "output"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False  # unknown keys flagged by editors too
    node = schema["$defs"]["Node"]
    assert {"id", "technique", "model", "inputs", "params"} <= set(node["properties"])
    assert node.get("additionalProperties") is False
    jsonschema.Draft202012Validator.check_schema(schema)
    good = yaml.safe_load(GOOD)
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError, match="modles"):  # what an editor would underline
        jsonschema.validate({**good, "modles": {}}, schema)


def test_to_yaml_round_trips(tmp_path: Path) -> None:
    recipe = python_recipe()
    text = recipe.to_yaml()
    assert "majority_vote" in text
    again = recipe_from_dict(yaml.safe_load(text))
    assert again == recipe
    path = write(tmp_path, text, "again.yaml")
    assert load_recipe(path) == recipe


def test_to_yaml_round_trips_multi_model_recipe() -> None:
    recipe = Recipe(
        name="two",
        models={"a": ModelSpec(backend="fake", model="x", dtype="bfloat16"), "b": ModelSpec(backend="fake", model="y")},
        budget=Budget(per_run=Limits(calls=10, flops=1e9)),
        nodes=(
            Node(id="g1", technique="sample", model="a", params={"n": 2, "stop": ["\n"]}),
            Node(id="g2", technique="sample", model="b"),
            Node(id="v", technique="majority_vote", inputs=("g1", "g2")),
        ),
    )
    assert recipe_from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


def test_python_built_recipe_raises_one_error_type_with_every_problem() -> None:
    from orchestra import RecipeError as PublicRecipeError

    with pytest.raises(PublicRecipeError) as info:
        Recipe.model_validate(
            {"name": "x", "nodes": [{"id": "a", "technique": "sample", "params": {"n": "two"}, "foo": 1}]}
        )
    text = str(info.value)
    assert "nodes[0].foo: unknown key" in text
    assert "nodes[0].params.n" in text
    assert "at least 1 item" not in text


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path) -> None:
    """Every recipe in recipes/ loads, validates and names its file in its `name`."""
    recipe = load_recipe(path)
    assert recipe.name == path.stem.replace("-", "_") or recipe.name == path.stem
