"""Scaling curves: the largest pool is generated once, smaller n replay it, and the figures are right.

Control flow with the scripted fake backend (whose sample k answers
correct + OFFSETS[k % 8], so 4 of the first 8 samples are right); one end-to-end
test on the real default model.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fake_backend import OFFSETS, FakeBackend, fake_backend, vote_recipe, write_sums  # noqa: F401
from typer.testing import CliRunner

from orchestra.cache import GenerationCache
from orchestra.metrics import pass_at_k
from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunResult, RunSummary
from orchestra.problem import Problem
from orchestra.report import accuracy_text
from orchestra.scaling.sweep import (
    PoolSample,
    ScaleError,
    ScaleObserver,
    judge_pool,
    parse_sample_counts,
    sample_nodes,
    sample_usage,
    scale,
    with_sample_count,
)
from orchestra.scaling.report import CSV_COLUMNS, plot_curves, scale_table, write_csv
from orchestra.significance import Interval
from orchestra.tasks import load_task
from orchestra.technique import technique
from orchestra.usage import Usage

ROOT = Path(__file__).resolve().parent.parent


@technique("constant_answer_for_scaling_tests", min_inputs=0, needs_model=False)
async def constant_answer(ctx, inputs, params):
    """A generator that is not `sample`: a recipe of only this has nothing to scale."""
    return []


def recipe(**kwargs) -> Recipe:
    return Recipe.model_validate(vote_recipe(**kwargs))


# --- input checks ---------------------------------------------------------------------------


def test_parse_sample_counts() -> None:
    assert parse_sample_counts("1,2,4,8") == [1, 2, 4, 8]
    assert parse_sample_counts(" 8, 2 ,4,2") == [2, 4, 8]  # sorted, duplicates dropped


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "comma-separated"), ("1,,4", "comma-separated"), ("1,2,x", "'x' is not a whole number"),
     ("1,2.5", "'2.5' is not a whole number"), ("0,2", "at least 1"), ("1,-4", "at least 1")],
)
def test_malformed_sample_counts_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ScaleError, match=message):
        parse_sample_counts(text)


def test_a_recipe_without_a_sample_node_is_refused(fake_backend) -> None:
    data = vote_recipe()
    data["nodes"] = [{"id": "fixed", "technique": "constant_answer_for_scaling_tests"}]
    data.pop("output")
    with pytest.raises(ScaleError, match=r"no 'sample' node .*fixed \(constant_answer_for_scaling_tests\)"):
        sample_nodes(Recipe.model_validate(data))


def test_with_sample_count_scales_the_per_problem_budget_up_only(fake_backend) -> None:
    base = recipe(n=4, max_tokens=64, budget={"per_problem": {"completion_tokens": 256, "seconds": 10.0},
                                             "per_run": {"completion_tokens": 5000}})
    bigger = with_sample_count(base, 16)
    assert bigger.node("samples").params["n"] == 16
    assert bigger.budget.per_problem.completion_tokens == 1024 and bigger.budget.per_problem.seconds == 40.0
    assert bigger.budget.per_run.completion_tokens == 5000  # a run-wide cap is the user's, kept
    smaller = with_sample_count(base, 2)
    assert smaller.node("samples").params["n"] == 2 and smaller.budget == base.budget
    with pytest.raises(ScaleError, match="not valid"):
        with_sample_count(base, 5000)  # sample's n is capped at 4096


# --- the pool is generated once ---------------------------------------------------------------


def test_largest_pool_is_generated_once_and_smaller_n_replay_it(tmp_path: Path, fake_backend) -> None:
    spec = write_sums(tmp_path / "sums.jsonl", 3)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    seen: list[tuple[str, str | None]] = []

    class Recorder(ScaleObserver):
        def stage(self, name, total):
            seen.append(("stage", name))

        def step(self, name, result=None):
            seen.append(("step", name))

    result = scale(recipe(n=4), spec, [8, 1, 4, 2], out=tmp_path / "curve", cache=cache, observer=Recorder())

    # One backend call per problem, all for the 8-sample pool; nothing afterwards.
    calls = fake_backend.log.calls
    assert len(calls) == 3 and all(c.n == 8 and c.first_index == 0 for c in calls)
    assert [row.n for row in result.rows] == [1, 2, 4, 8] and result.pool_n == 8
    for row in result.rows:
        assert row.problems == 3 and row.errors == 0 and row.cut_short == 0
        if row.n < 8:
            assert row.generated == 0 and row.replayed == 3 * row.n
        else:
            assert row.generated == 24 and row.replayed == 0
    assert result.regenerated() == {}
    assert [s for s in seen if s[0] == "stage"] == [("stage", "n=8"), ("stage", "n=4"), ("stage", "n=2"),
                                                    ("stage", "n=1"), ("stage", "judging pool")]
    assert seen.count(("step", "n=8")) == 3 and seen.count(("step", "judging pool")) == 3

    # Figures: 4 of the 8 pool samples are right for every problem.
    right = sum(offset == 0 for offset in OFFSETS)
    for row in result.rows:
        assert row.pass_at_k == pytest.approx(pass_at_k(8, right, row.n))
    assert result.row(1).majority_at_k == pytest.approx(right / 8)
    assert result.row(8).majority_at_k == 1.0  # 4 votes for the right answer, at most 2 for any other
    # The recipe itself at n votes over the first n samples: c+1 | c+1, c (tie, first seen) | c wins.
    assert [result.row(n).accuracy for n in (1, 2, 4, 8)] == [0.0, 0.0, 1.0, 1.0]
    assert [result.row(n).coverage for n in (1, 2, 4, 8)] == [0.0, 1.0, 1.0, 1.0]
    assert result.row(1).tokens_per_correct is None and result.row(4).tokens_per_correct == result.row(4).tokens_per_problem
    # Logical cost grows with n even though smaller n generated nothing.
    tokens = [row.tokens_per_problem for row in result.rows]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert result.row(8).flops_per_problem == pytest.approx(2 * 1000 * result.row(8).tokens_per_problem)

    # Outputs: a run folder per n, scale.json; the report functions write a CSV and a PNG.
    for n in (1, 2, 4, 8):
        assert (tmp_path / f"curve/n{n}/summary.json").exists()
    assert json.loads((tmp_path / "curve/scale.json").read_text())["pool_n"] == 8
    rows = list(csv.DictReader(write_csv(result, tmp_path / "curve/scale.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and [r["n"] for r in rows] == ["1", "2", "4", "8"]
    assert rows[0]["tokens_per_correct"] == "" and float(rows[2]["accuracy"]) == 1.0
    # Each accuracy carries its interval over problems: in the rows, scale.json, the CSV and the table.
    assert result.row(1).accuracy_ci == Interval(estimate=0.0, low=0.0, high=0.0)
    assert all(row.accuracy_ci is not None and row.accuracy_ci.estimate == row.accuracy for row in result.rows)
    saved = json.loads((tmp_path / "curve/scale.json").read_text())["rows"]
    assert [r["accuracy_ci"]["high"] for r in saved] == [row.accuracy_ci.high for row in result.rows]
    assert (float(rows[2]["accuracy_low"]), float(rows[2]["accuracy_high"])) == (1.0, 1.0)
    assert accuracy_text(1.0, result.row(4).accuracy_ci) == "100.0% [100.0, 100.0]"
    png = plot_curves(result, tmp_path / "curve/scale.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert scale_table(result).row_count == 4

    # A second curve on a warm cache generates nothing at all, and measures the same.
    again = scale(recipe(n=4), spec, [1, 2, 4, 8], out=tmp_path / "again", cache=cache)
    assert len(fake_backend.log.calls) == 3
    assert all(row.generated == 0 for row in again.rows)
    assert [r.model_dump(exclude={"out", "replayed", "generated"}) for r in again.rows] == [
        r.model_dump(exclude={"out", "replayed", "generated"}) for r in result.rows
    ]


def test_a_budget_sized_for_the_recipe_does_not_shrink_the_larger_pool(tmp_path: Path, fake_backend) -> None:
    """completion_tokens 4 x 64 fits n=4 exactly; at n=16 it would shrink max_tokens to 16 and change
    the samples, unless it scales with n, as it does."""
    base = recipe(n=4, max_tokens=64, budget={"per_problem": {"completion_tokens": 256}})
    result = scale(base, write_sums(tmp_path / "sums.jsonl", 2), [2, 4, 16], out=tmp_path / "curve",
                   cache=tmp_path / "cache.sqlite")
    assert [(c.n, c.max_tokens) for c in fake_backend.log.calls] == [(16, 64), (16, 64)]
    assert result.regenerated() == {} and result.row(16).cut_short == 0


def test_a_half_credited_sample_is_wrong_in_the_pool(tmp_path: Path) -> None:
    """pass@k and majority@k count exactly right samples only: a 0.5 from the task is wrong."""
    from orchestra.candidate import Candidate

    task = load_task(write_sums(tmp_path / "sums.jsonl", 1))
    exact = task.score
    task.score = lambda problem, text, answer: 0.5 if answer == "-3" else exact(problem, text, answer)  # type: ignore[method-assign]
    problem = task.problems("test")[0]  # 2 + 1 = 3; "-3" is a sign error
    pool = [Candidate(text=f"Answer: {a}", answer=a) for a in ("3", "-3", "-3")]
    assert judge_pool(task, problem, pool) == [PoolSample(vote="3", correct=True)] + [PoolSample(vote="-3", correct=False)] * 2


def test_regeneration_is_counted_from_the_nodes_cache_hits() -> None:
    def problem(hits: int) -> ProblemResult:
        return ProblemResult(problem_id="p", status="ok", usage_by_node={"samples": Usage(calls=1, cache_hits=hits)})

    results = [problem(4), problem(1)]
    run = RunResult(results=results, summary=RunSummary.of(results, recipe="r", task=None, split=None, complete=True,
                                                           wall_seconds=1, model_seconds=1))
    assert sample_usage(run, ["samples"], 4) == (3, 5)  # the second problem replayed 1 of its 4 samples


def test_several_sample_nodes_scale_together_without_pool_estimates(tmp_path: Path, fake_backend) -> None:
    data = vote_recipe(n=2)
    data["nodes"] = [
        {"id": "hot", "technique": "sample", "params": {"n": 2, "temperature": 1.0, "max_tokens": 64}},
        {"id": "cold", "technique": "sample", "params": {"n": 2, "temperature": 0.3, "max_tokens": 64}},
        {"id": "vote", "technique": "majority_vote", "inputs": ["hot", "cold"]},
    ]
    result = scale(Recipe.model_validate(data), write_sums(tmp_path / "sums.jsonl", 2), [1, 4],
                   out=tmp_path / "curve", cache=tmp_path / "cache.sqlite")
    assert result.nodes == ["hot", "cold"]
    assert len(fake_backend.log.calls) == 4 and all(c.n == 4 for c in fake_backend.log.calls)
    assert result.row(1).generated == 0 and result.row(1).replayed == 2 * 2
    assert all(row.pass_at_k is None and row.majority_at_k is None for row in result.rows)


# --- command line ---------------------------------------------------------------------------


def test_cli_scale_writes_table_csv_and_plot(tmp_path: Path, fake_backend, monkeypatch) -> None:
    from orchestra import cli, terminal

    monkeypatch.setattr(terminal.console, "_width", 300)
    path = tmp_path / "vote.yaml"
    path.write_text(recipe(n=4).to_yaml())
    out = tmp_path / "curve"
    args = ["scale", str(path), "--task", write_sums(tmp_path / "sums.jsonl", 3), "--n", "1,2,4,8",
            "--out", str(out), "--cache", str(tmp_path / "cache.sqlite")]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "pass@n" in result.stdout and "maj@n" in result.stdout
    assert "100.0% [100.0, 100.0]" in result.stdout and "95% CI" in result.stdout  # n=4, 8: every problem right
    assert "accuracy_low" in (out / "scale.csv").read_text().splitlines()[0]
    assert "replay check: n=1, 2, 4 generated 0 samples (21 replayed from the n=8 pool)" in result.stdout
    assert f"plot: {out / 'scale.png'}" in result.stdout
    assert (out / "scale.csv").read_text().count("\n") == 5 and (out / "scale.png").stat().st_size > 0
    assert len(fake_backend.log.calls) == 3


def test_cli_scale_errors(tmp_path: Path, fake_backend) -> None:
    from orchestra import cli

    path = tmp_path / "vote.yaml"
    path.write_text(recipe(n=4).to_yaml())
    task = write_sums(tmp_path / "sums.jsonl", 2)
    bad_n = CliRunner().invoke(cli.app, ["scale", str(path), "--task", task, "--n", "1,two"])
    assert bad_n.exit_code == 2 and "'two' is not a whole number" in bad_n.output
    data = vote_recipe()
    data["nodes"] = [{"id": "fixed", "technique": "constant_answer_for_scaling_tests"}]
    data.pop("output")
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text(Recipe.model_validate(data).to_yaml())
    no_sample = CliRunner().invoke(cli.app, ["scale", str(nothing), "--task", task, "--n", "1,2"])
    assert no_sample.exit_code == 2 and "no 'sample' node" in no_sample.output
    assert fake_backend.log.calls == []


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.model
def test_scale_on_the_real_model_replays_the_pool(tmp_path: Path) -> None:
    real = Recipe.model_validate(
        {
            "name": "vote",
            "models": {"small": {"dtype": "float32"}},
            "nodes": [
                {"id": "samples", "technique": "sample", "params": {"n": 2, "temperature": 0.7, "max_tokens": 32}},
                {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
            ],
        }
    )
    task = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
    result = scale(real, task, [1, 2, 4], limit=2, out=tmp_path / "curve", cache=tmp_path / "cache.sqlite")
    assert result.row(4).generated == 2 * 4
    assert result.regenerated() == {} and [result.row(n).replayed for n in (1, 2)] == [2, 4]
    for row in result.rows:
        assert row.errors == 0 and 0.0 <= row.accuracy <= 1.0
        assert row.pass_at_k is not None and row.majority_at_k is not None
        assert row.majority_at_k <= row.pass_at_k + 1e-12  # a vote can only pick among what was sampled
    passes = [row.pass_at_k for row in result.rows]
    assert passes == sorted(passes)  # more samples never cover less
    tokens = [row.tokens_per_problem for row in result.rows]
    assert tokens == sorted(tokens) and tokens[0] > 0
    # The replay at n=2 gave the recipe exactly the pool's first two samples.
    pool = [json.loads(x) for x in (tmp_path / "curve/n4/trace.jsonl").read_text().splitlines()]
    pair = [json.loads(x) for x in (tmp_path / "curve/n2/trace.jsonl").read_text().splitlines()]
    first_two = {t["problem_id"]: [c["text"] for c in t["outputs"][:2]] for t in pool if t["node"] == "samples"}
    assert {t["problem_id"]: [c["text"] for c in t["outputs"]] for t in pair if t["node"] == "samples"} == first_two
    assert plot_curves(result, tmp_path / "curve/scale.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_titles_wrap_long_task_specs_at_their_separators() -> None:
    from orchestra.scaling.report import _wrap

    title = "quickstart on reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+] (test)"
    lines = _wrap(title, 50).split("\n")
    assert "".join(lines).replace(" ", "") == title.replace(" ", "")
    assert len(lines) > 1 and all(len(line) <= 50 for line in lines)
    assert lines[1].startswith("min_terms=2&") or lines[1].startswith("reasoning_gym")
    assert _wrap(title, 500) == title
