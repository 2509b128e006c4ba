"""Oracle scorers (they read the reference answer): refused where a recipe is searched or served
unless allowed for measurement, run and marked wherever `orchestra run`, `scale` or `search` shows one."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import optuna
import pytest
from fake_backend import fake_backend, vote_recipe, write_sums  # noqa: F401  (fixture)
from orchestra.search.holdout import holdout
from orchestra.search.objectives import Objective
from orchestra.search.outputs import write_trials_csv
from orchestra.search.space import SpaceError, load_space, space_from_dict
from orchestra.search.study import SearchSettings, run_worker
from pydantic import ValidationError
from rich.console import Console
from search_fixtures import fake_space, write_split_sums
from typer.testing import CliRunner

from orchestra import cli, terminal
from orchestra.api import arun
from orchestra.comparison import compare
from orchestra.oracle import ORACLE_MARK, OracleRefused, OracleUse
from orchestra.recipe import Recipe
from orchestra.report import comparison_lines, node_table, results_table
from orchestra.scaling.report import scale_table, write_csv
from orchestra.scaling.sweep import scale
from orchestra.scorer import scorer
from orchestra.server import ServeSettings, create_app
from orchestra.tasks import load_task


@scorer("test_peeks_at_the_answer", oracle=True)
async def _peeks(ctx, candidate) -> float:
    return 1.0


def text_of(renderable) -> str:
    """What a table shows, whitespace collapsed (a caption wraps at the table's width)."""
    console = Console(width=300, record=True)
    console.print(renderable)
    return " ".join(console.export_text().split())


def picked_by(scorer_name: str, name: str = "oracle_pick", param: str = "scorer", technique: str = "best_of_n") -> Recipe:
    """sample 4 -> a selector that names `scorer_name`, on the fake model."""
    data = vote_recipe(name)
    data["nodes"][1] = {"id": "pick", "technique": technique, "inputs": ["samples"], "params": {param: scorer_name}}
    data["output"] = "pick"
    return Recipe.model_validate(data)


def oracle_select_space(**changes) -> dict:
    """The fake space with a selector layer that offers the answer key beside honest ones."""
    space = fake_space(**changes)
    space["layers"][2]["options"].append(
        {"label": "peek", "technique": "best_of_n", "params": {"scorer": {"choices": ["mean_logprob", "task"]}}}
    )
    return space


# --- where a recipe names an oracle scorer ------------------------------------------------------------


@pytest.mark.parametrize(
    ("technique", "param", "name"),
    [("best_of_n", "scorer", "task"), ("best_of_n", "scorer", "execution"), ("majority_vote", "weight_by", "task"),
     ("weighted_best_of_n", "scorer", "test_peeks_at_the_answer"), ("repeated_sampling", "verifier", "task")],
)
def test_a_recipe_knows_where_it_names_an_oracle_scorer(fake_backend, technique: str, param: str, name: str) -> None:
    recipe = picked_by(name, param=param, technique=technique)
    assert recipe.oracle_uses == [OracleUse("pick", param, name)] and recipe.uses_oracle
    assert str(recipe.oracle_uses[0]) == f"pick.{param}={name}"


def test_defaults_and_allocate_signals_count_and_honest_recipes_are_clean(fake_backend) -> None:
    scored = vote_recipe("scored")
    scored["nodes"][1] = {"id": "rated", "technique": "score", "inputs": ["samples"]}  # `score` rates by `task` by default
    scored["output"] = "rated"
    assert [str(u) for u in Recipe.model_validate(scored).oracle_uses] == ["rated.scorer=task"]
    allocate = vote_recipe("allocate")
    allocate["nodes"] = [{"id": "alloc", "technique": "allocate", "params": {"signal": "scorer", "scorer": "task"}}]
    allocate["output"] = "alloc"
    assert [str(u) for u in Recipe.model_validate(allocate).oracle_uses] == ["alloc.scorer=task"]
    for honest in (Recipe.model_validate(vote_recipe()), picked_by("mean_logprob")):
        assert honest.oracle_uses == [] and not honest.uses_oracle


# --- searched: refused at space-load time unless allowed ---------------------------------------------


def test_a_space_offering_an_oracle_scorer_is_refused_in_one_line(fake_backend) -> None:
    with pytest.raises(SpaceError) as refused:
        space_from_dict(oracle_select_space(), source="spaces/peek.yaml")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("spaces/peek.yaml: ")
    assert "layers.select.peek offers the oracle scorer 'task' (params.scorer)" in message
    assert "--allow-oracle" in message and "mean_logprob" not in message


def test_a_default_oracle_scorer_in_a_space_is_refused_too(fake_backend) -> None:
    space = fake_space()
    space["layers"].insert(1, {"id": "rate", "options": [{"technique": "score"}]})  # score's default scorer is task
    with pytest.raises(SpaceError, match=r"layers\.rate\.score offers the oracle scorer 'task'"):
        space_from_dict(space)


def test_allow_oracle_lets_a_space_be_searched_for_measurement(fake_backend, tmp_path: Path) -> None:
    space = space_from_dict(oracle_select_space(), allow_oracle=True)
    path = tmp_path / "peek.yaml"
    path.write_text(json.dumps(oracle_select_space()))  # JSON is YAML
    with pytest.raises(SpaceError, match="peek offers the oracle scorer"):
        load_space(path)
    assert load_space(path, allow_oracle=True) == space
    with pytest.raises(ValidationError, match="--allow-oracle"):  # settings built in Python are checked too
        SearchSettings(space=space, task="t", storage="sqlite:///x.db")
    assert SearchSettings(space=space, task="t", storage="sqlite:///x.db", allow_oracle=True).allow_oracle


def test_cli_search_refuses_an_oracle_space_before_anything_loads(fake_backend, tmp_path: Path) -> None:
    path = tmp_path / "peek.yaml"
    path.write_text(json.dumps(oracle_select_space()))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["search", str(path), "--task", write_split_sums(tmp_path / "s.jsonl", dev=4),
                                          "--out", str(out)])
    said = " ".join(result.output.split())  # unwrapped
    assert result.exit_code == 2 and "Traceback" not in said
    assert "peek offers the oracle scorer 'task'" in said and "--allow-oracle" in said
    assert not out.exists() and not fake_backend.log.calls


def test_an_allowed_oracle_search_marks_its_trials_and_test_rows(fake_backend, tmp_path: Path) -> None:
    space = space_from_dict(oracle_select_space(), allow_oracle=True)
    task_spec = write_split_sums(tmp_path / "sums.jsonl", dev=2, test=2)
    settings = SearchSettings(space=space, task=task_spec, trials=1, dev_limit=2, first_rung=None, sampler="random",
                              storage=f"sqlite:///{tmp_path / 'study.db'}", replay=False, allow_oracle=True)
    peek = {"gen.sample.n": 4, "gen.sample.temperature": 0.5, "check": "none",
            "select[majority_vote|certainty|rank|fuse|peek]": "peek", "select.peek.scorer": "task"}
    honest = {**peek, "select.peek.scorer": "mean_logprob"}
    study = optuna.create_study(study_name=settings.study_name, storage=settings.storage, direction="maximize")
    study.enqueue_trial(peek)
    run_worker(settings)
    study.enqueue_trial(honest)
    run_worker(settings.model_copy(update={"trials": 2}))
    marked, clean = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert marked.user_attrs["structure"].endswith(ORACLE_MARK) and marked.user_attrs["oracle"] == "select.scorer=task"
    assert not clean.user_attrs["structure"].endswith(ORACLE_MARK) and "oracle" not in clean.user_attrs
    rows = list(csv.DictReader(write_trials_csv(study, tmp_path / "trials.csv").open()))
    assert [r["oracle"] for r in rows] == ["select.scorer=task", ""]
    task = load_task(task_spec)
    result = asyncio.run(holdout([picked_by("task")], task, Objective(), 2, greedy=Recipe.model_validate(vote_recipe("greedy", n=1)), cache=None))
    assert [row.label for row in result.rows] == [f"oracle_pick {ORACLE_MARK}", "greedy"]
    assert result.to_json()["rows"][0]["oracle"] == ["pick.scorer=task"] and result.to_json()["rows"][1]["oracle"] == []


# --- served: refused before any model loads unless allowed -------------------------------------------


def test_serving_an_oracle_recipe_is_refused_unless_allowed(fake_backend) -> None:
    from orchestra.backends import base as backends_base

    with pytest.raises(OracleRefused) as refused:
        create_app([Recipe.model_validate(vote_recipe()), picked_by("task")])
    message = str(refused.value)
    assert "\n" not in message and "node 'pick' names the oracle scorer 'task' (params.scorer)" in message
    assert "serving it is refused" in message and "--allow-oracle" in message
    assert not backends_base._LOADED  # refused before loading any model
    create_app([picked_by("task")], ServeSettings(allow_oracle=True))  # measurement: allowed
    assert backends_base._LOADED


def test_cli_serve_refuses_an_oracle_recipe_in_one_line(fake_backend, tmp_path: Path) -> None:
    path = tmp_path / "oracle.yaml"
    path.write_text(picked_by("task").to_yaml())
    result = CliRunner().invoke(cli.app, ["serve", str(path)])
    said = " ".join(result.output.split())  # unwrapped
    assert result.exit_code == 2 and "Traceback" not in said
    assert "node 'pick' names the oracle scorer 'task'" in said and "--allow-oracle" in said
    assert "http://" not in said  # never claims to be serving


# --- run and scale: measured, and marked --------------------------------------------------------------


def test_run_tables_and_comparisons_mark_an_oracle_recipe(fake_backend, tmp_path: Path) -> None:
    task = load_task(write_sums(tmp_path / "sums.jsonl", 4))
    oracle = asyncio.run(arun(picked_by("task"), task, out=tmp_path / "oracle", cache=False))
    vote = asyncio.run(arun(Recipe.model_validate(vote_recipe()), task, out=tmp_path / "vote", cache=False))
    assert oracle.summary.oracle == ["pick.scorer=task"] and vote.summary.oracle == []
    assert json.loads((tmp_path / "oracle" / "summary.json").read_text())["oracle"] == ["pick.scorer=task"]
    table = text_of(results_table([oracle, vote]))
    assert f"oracle_pick {ORACLE_MARK}" in table and f"vote {ORACLE_MARK}" not in table
    assert "reads the reference answer" in table  # the caption says what the mark means
    assert f"oracle_pick {ORACLE_MARK}: cost by node" in text_of(node_table(oracle))
    assert ORACLE_MARK not in text_of(results_table([vote])) and ORACLE_MARK not in text_of(node_table(vote))
    comparison = compare([oracle, vote])
    assert [r.oracle for r in comparison.recipes] == [["pick.scorer=task"], []]
    lines = comparison_lines(comparison)
    assert lines[0].startswith(f"oracle_pick {ORACLE_MARK} − vote: ") and "reads the reference answer" in lines[1]
    assert all(ORACLE_MARK not in line for line in comparison_lines(compare([vote, vote])))


def test_cli_run_marks_an_oracle_recipe(fake_backend, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(terminal.console, "_width", 300)
    path = tmp_path / "oracle.yaml"
    path.write_text(picked_by("task").to_yaml())
    result = CliRunner().invoke(cli.app, ["run", str(path), "--task", write_sums(tmp_path / "sums.jsonl", 3),
                                          "--out", str(tmp_path / "run"), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert f"oracle_pick {ORACLE_MARK}" in result.stdout


def test_scale_outputs_mark_an_oracle_recipe(fake_backend, tmp_path: Path) -> None:
    result = scale(picked_by("task"), write_sums(tmp_path / "sums.jsonl", 2), [1, 4], out=tmp_path / "curve", cache=tmp_path / "c.sqlite")
    assert result.oracle == ["pick.scorer=task"]
    assert json.loads((tmp_path / "curve" / "scale.json").read_text())["oracle"] == ["pick.scorer=task"]
    assert f"oracle_pick {ORACLE_MARK} ·" in text_of(scale_table(result))
    rows = list(csv.DictReader(write_csv(result, tmp_path / "scale.csv").open()))
    assert [row["oracle"] for row in rows] == ["pick.scorer=task"] * 2
    honest = scale(Recipe.model_validate(vote_recipe()), write_sums(tmp_path / "sums.jsonl", 2), [1, 4],
                   out=tmp_path / "honest", cache=tmp_path / "c.sqlite")
    assert ORACLE_MARK not in text_of(scale_table(honest))
    assert [row["oracle"] for row in csv.DictReader(write_csv(honest, tmp_path / "h.csv").open())] == ["", ""]
