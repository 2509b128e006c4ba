"""Search spaces: construction rules, conditional parameters, knobs, and clear errors."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from fake_backend import fake_backend  # noqa: F401
from search_fixtures import fake_space

from orchestra.recipe import load_recipe
from orchestra.search.objectives import Objective
from orchestra.search.rules import sequence_problems
from orchestra.search.space import SpaceError, load_space, space_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _steps(recipe) -> list[tuple[str, str, list[str]]]:
    return [(n.id, n.technique, []) for n in recipe.nodes]


def test_structures_follow_archon_rules(fake_backend) -> None:
    space = space_from_dict(fake_space())
    structures = set(space.structures())
    # a critic is only ever followed by rank or fuse
    assert ("sample", "critic", "rank") in structures and ("sample", "critic", "fuse") in structures
    assert ("sample", "critic", "majority_vote") not in structures
    assert ("sample", "critic", "certainty") not in structures
    # a verifier-weighted vote only where a verify layer ran
    assert ("sample", "verify", "verified_vote") in structures
    assert ("sample", "verified_vote") not in structures
    assert ("sample", "majority_vote") in structures
    assert len(structures) == 2 + 5 + 4


def test_every_sampled_recipe_is_valid_and_parameters_are_conditional(fake_backend) -> None:
    space = space_from_dict(fake_space())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(80):
        trial = study.ask()
        recipe = space.suggest(trial)
        techniques = [n.technique for n in recipe.nodes]
        seen.add(tuple(techniques))
        assert techniques[0] == "sample"
        if "critic" in techniques:
            assert techniques[techniques.index("critic") + 1] in {"rank", "fuse"}
        # only the chosen option's parameters are suggested
        select = recipe.node("select")
        if select.technique != "rank":
            assert not any(name.startswith("select.rank.") for name in trial.params)
        else:
            assert trial.params["select.rank.top_k"] == select.params["top_k"]
        if select.params.get("weight_by") == "verify":
            assert recipe.node("check").technique == "verify"
        # the choice set offered after a critic is only the valid one
        if "check" in trial.params and trial.params["check"] == "critic":
            assert "select[rank|fuse]" in trial.params
        study.tell(trial, 0.0)
    assert len(seen) >= 8


def test_rules_reject_bad_orders(fake_backend) -> None:
    assert sequence_problems([("a", "sample", []), ("b", "majority_vote", [])]) == []
    assert any("first layer" in p for p in sequence_problems([("a", "sample", []), ("b", "sample", [])]))
    assert any("needs candidates" in p for p in sequence_problems([("a", "majority_vote", [])]))
    assert any("followed by" in p for p in sequence_problems([("a", "sample", []), ("b", "critic", [])]))
    assert any("unit_test_generate" in p for p in sequence_problems(
        [("a", "sample", []), ("b", "unit_test_evaluate", [])]))
    assert sequence_problems(
        [("a", "sample", []), ("t", "unit_test_generate", []), ("e", "unit_test_evaluate", [])]) == []


def test_unit_test_layers_build_a_side_node(fake_backend) -> None:
    space = space_from_dict(fake_space(layers=[
        {"id": "code", "options": [{"technique": "sample", "params": {"n": {"choices": [2, 4]}}}]},
        {"id": "tests", "optional": True, "options": [{"technique": "unit_test_generate", "params": {"n": 2}}]},
        {"id": "pick", "options": [{"technique": "unit_test_evaluate", "params": {"top_k": 1}}, {"technique": "majority_vote"}]},
    ]))
    assert set(space.structures()) == {("sample", "unit_test_generate", "unit_test_evaluate"), ("sample", "majority_vote")}
    recipe = space.suggest(optuna.trial.FixedTrial({"code.sample.n": 2, "tests": "unit_test_generate"}))
    pick = recipe.node("pick")
    assert pick.inputs == ("code", "tests") and pick.params["tests_from"] == "tests"
    assert recipe.node("tests").inputs == ()


def test_knobs_set_any_model_spec_field(fake_backend) -> None:
    space = space_from_dict(fake_space(knobs={
        "models.m.max_batch_size": {"choices": [4, 16]},
        "models.m.dtype": {"choices": ["float32", "bfloat16"]},
    }))
    recipe = space.suggest(optuna.trial.FixedTrial({
        "gen.sample.n": 4, "gen.sample.temperature": 0.5, "check": "none", "select[majority_vote|certainty|rank|fuse]": "majority_vote",
        "models.m.max_batch_size": 16, "models.m.dtype": "bfloat16",
    }))
    assert recipe.models["m"].max_batch_size == 16 and recipe.models["m"].dtype == "bfloat16"


def test_bad_spaces_name_every_problem(fake_backend) -> None:
    with pytest.raises(SpaceError) as err:
        space_from_dict(fake_space(
            knobs={"models.m.max_batch_sise": {"choices": [1]}, "models.nope.dtype": "float32",
                   "models.m.dtype": {"choices": ["float32", "fp7"]}},
            layers=[{"id": "gen", "options": [
                {"technique": "sample", "params": {"n": {"int": [0, 4]}, "temperature": {"choices": [0.5, -1]}}},
                {"technique": "sampel"},
            ]}],
        ))
    message = str(err.value)
    for expected in ("max_batch_sise", "models.nope.dtype", "fp7", "gen.sample.params.n", "gen.sample.params.temperature", "sampel"):
        assert expected in message, (expected, message)
    with pytest.raises(SpaceError, match="construction rules"):
        space_from_dict(fake_space(layers=[
            {"id": "gen", "options": [{"technique": "sample"}]},
            {"id": "crit", "options": [{"technique": "critic"}]},
        ]))
    with pytest.raises(SpaceError, match="choices/int/float"):
        space_from_dict(fake_space(layers=[
            {"id": "gen", "options": [{"technique": "sample", "params": {"n": {"choices": [1], "int": [1, 2]}}}]}]))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "recipes" / "spaces").glob("*.yaml")))
def test_shipped_spaces_load_and_their_recipes_are_runnable_yaml(name: str, tmp_path: Path) -> None:
    space = load_space(ROOT / "recipes" / "spaces" / f"{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(10):
        trial = study.ask()
        path = tmp_path / f"r{i}.yaml"
        path.write_text(space.suggest(trial).to_yaml())
        assert load_recipe(path).nodes[0].id == space.layers[0].id  # the generation layer comes first
        study.tell(trial, 0.0)


def test_objective_modes() -> None:
    from orchestra.results import RunSummary
    from orchestra.usage import Usage

    summary = RunSummary(recipe="r", task=None, split=None, problems=4, complete=True, accuracy=0.5, coverage=0.5,
                         errors=0, cut_short=0, usage=Usage(calls=8, prompt_tokens=400, completion_tokens=1000, flops=2e6),
                         tokens_per_problem=350, flops_per_problem=5e5, seconds_per_problem=1, wall_seconds=4,
                         model_seconds=3, overhead_share=0.25)
    single = Objective(cost="completion_tokens", budget=200)
    assert single.directions == ["maximize"] and single.cost_of(summary) == 250
    assert single.violation(250) == 50 and not single.feasible(250) and single.feasible(200)
    assert Objective(cost="total_tokens").cost_of(summary) == 350
    assert Objective(cost="calls").cost_of(summary) == 2
    pareto = Objective(cost="flops", pareto=True)
    assert pareto.directions == ["maximize", "minimize"] and pareto.values(0.5, 5e5) == [0.5, 5e5]
    assert Objective(cost="seconds").replays is False and single.replays is True
    with pytest.raises(ValueError):
        Objective(budget=0)


def test_describe_names_labels_searched_values_and_knobs(fake_backend) -> None:
    space = space_from_dict(fake_space(knobs={"models.m.max_batch_size": {"choices": [4, 16]}}))
    params = {"gen.sample.n": 4, "gen.sample.temperature": 0.5, "check": "verify",
              "select": "verified_vote", "models.m.max_batch_size": 16}
    assert space.describe(params) == "gen:sample(n=4 temperature=0.5) > check:verify > select:verified_vote [m.max_batch_size=16]"
    assert space.describe({"gen.sample.n": 1, "gen.sample.temperature": 0.8, "check": "none",
                           "select[majority_vote|certainty|rank|fuse]": "rank", "select.rank.top_k": 2}) == \
        "gen:sample(n=1 temperature=0.8) > select:rank(top_k=2)"
