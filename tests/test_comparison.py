"""Comparing recipes with statistics: the comparison of runs, its printed lines, the results table's
intervals and partial-credit column, and `orchestra run --compare` end to end on the scripted backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fake_backend import FakeBackend, correct_answer, fake_backend, vote_recipe, write_sums  # noqa: F401
from typer.testing import CliRunner

from orchestra.comparison import Comparison, compare
from orchestra.recipe import Recipe
from orchestra.report import accuracy_text, comparison_lines, results_table
from orchestra.results import ProblemResult, RunResult, RunSummary
from orchestra.significance import Interval, problems_to_detect
from orchestra.tasks.jsonl_task import JsonlTask


def run_of(name: str, scores: list[float]) -> RunResult:
    results = [ProblemResult(problem_id=f"p{i}", status="ok", score=s) for i, s in enumerate(scores)]
    summary = RunSummary.of(results, recipe=name, task="t", split="test", complete=True, wall_seconds=1, model_seconds=1)
    return RunResult(results=results, summary=summary)


def table_text(table) -> str:
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(table)
    return console.export_text()


# --- the comparison of runs ---------------------------------------------------------------------


def test_compare_pairs_the_first_run_with_every_other() -> None:
    better = run_of("vote", [1.0] * 30 + [0.0] * 10)  # right on greedy's 10 and on 20 more
    base = run_of("greedy", [1.0] * 10 + [0.0] * 30)
    same = run_of("copy", [1.0] * 30 + [0.0] * 10)
    comparison = compare([better, base, same])
    assert [r.recipe for r in comparison.recipes] == ["vote", "greedy", "copy"]
    assert comparison.recipes[0].accuracy == better.summary.accuracy_ci and comparison.problems == 40
    vote, copy = comparison.differences
    assert (vote.recipe, vote.baseline) == ("vote", "greedy")
    assert vote.difference.estimate == pytest.approx(0.5) and vote.difference.significant
    assert (vote.difference.only_a, vote.difference.only_b, vote.discordance) == (20, 0, 0.5)
    assert vote.problems_to_detect == problems_to_detect(0.10, discordance=0.5)
    assert copy.difference.estimate == 0.0 and not copy.difference.significant and copy.discordance == 0.0
    assert Comparison.model_validate_json(comparison.model_dump_json()) == comparison


def test_compare_counts_partial_credit_as_wrong_and_pairs_by_problem() -> None:
    base = run_of("greedy", [0.5, 0.5, 1.0, 0.0])
    other = run_of("vote", [1.0, 0.5, 1.0, 0.0])
    base.results.reverse()  # paired by problem id, not by position
    (pair,) = compare([other, base]).differences
    assert (pair.difference.only_a, pair.difference.only_b) == (1, 0) and pair.difference.estimate == 0.25
    with pytest.raises(ValueError, match="share no problem"):
        compare([base, RunResult(results=[], summary=run_of("none", []).summary)])


def test_comparison_lines_say_difference_verdict_and_problems_needed() -> None:
    base = run_of("greedy", [1.0] * 10 + [0.0] * 30)
    comparison = compare([run_of("vote", [1.0] * 30 + [0.0] * 10), base])
    difference, needed = comparison_lines(comparison)
    assert re.fullmatch(
        r"vote − greedy: \+50\.0 pts \[\+\d+\.\d, \+\d+\.\d\], significant "
        r"· vote alone right on 20, greedy alone on 0, of 40 problems", difference
    ), difference
    n = problems_to_detect(0.10, discordance=0.5)
    assert needed == (f"a 10-point difference needs ≈{n} problems to be seen at this disagreement rate "
                      "(the two disagree on 50% of problems); this table has 40")
    several = comparison_lines(compare([base, run_of("vote", [1.0] * 40), run_of("copy", [1.0] * 10 + [0.0] * 30)]))
    assert len(several) == 3 and "greedy − copy: +0.0 pts [+0.0, +0.0], not significant (CI includes 0)" in several[1]
    assert several[2] == (
        "problems a 10-point difference needs to be seen, at each pair's disagreement rate: "
        f"≈{problems_to_detect(0.1, discordance=0.75)} for greedy vs vote, ≈{problems_to_detect(0.1, discordance=0.0)} "
        "for greedy vs copy; this table has 40"
    )
    assert comparison_lines(compare([base])) == []


# --- the results table -----------------------------------------------------------------------------


def test_results_table_shows_the_interval_and_partial_credit_only_when_there_is_some() -> None:
    exact = run_of("greedy", [1.0] * 6 + [0.0] * 4)
    ci = exact.summary.accuracy_ci
    assert accuracy_text(0.6, ci) == f"60.0% [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
    assert accuracy_text(0.6, None) == "60.0%" and accuracy_text(0.625, Interval(estimate=0.625, low=0.5, high=0.75)) == "62.5% [50.0, 75.0]"
    plain = table_text(results_table([exact]))
    assert accuracy_text(0.6, ci) in plain and "95% CI" in plain and "partial" not in plain
    halves = run_of("vote", [1.0] * 6 + [0.5] * 4)  # four sign errors half-credited
    both = table_text(results_table([exact, halves]))
    assert "partial" in both and "80.0%" in both  # vote's mean score; its acc is 60% like greedy's
    assert halves.summary.accuracy == 0.6


# --- orchestra run --compare ----------------------------------------------------------------------


def first_sample_right_on_even_sums(request, prompt: str, index: int) -> str | None:
    """One-sample calls answer right when the sum is even (half of write_sums' problems); n>1 calls keep the default replies."""
    if request.n != 1:
        return None
    correct = correct_answer(prompt)
    return f"Answer: {correct + correct % 2}"


def write_recipes(tmp_path: Path) -> list[Path]:
    first = {**vote_recipe("first", n=1), "nodes": [vote_recipe(n=1)["nodes"][0]], "output": "samples"}
    paths = []
    for data in (vote_recipe("vote", n=4), first, vote_recipe("vote8", n=8)):
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(Recipe.model_validate(data).to_yaml())
        paths.append(path)
    return paths


def test_cli_run_compare_prints_differences_and_writes_comparison_json(tmp_path: Path, fake_backend, monkeypatch) -> None:
    from orchestra import cli, terminal

    monkeypatch.setattr(terminal.console, "_width", 300)
    FakeBackend.script = first_sample_right_on_even_sums
    vote, first, vote8 = write_recipes(tmp_path)
    out = tmp_path / "run"
    args = ["run", str(vote), "--compare", str(first), "--compare", str(vote8), "--task",
            write_sums(tmp_path / "sums.jsonl", 30), "--limit", "30", "--out", str(out), "--no-cache"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output

    saved = json.loads((out / "comparison.json").read_text())
    assert saved["problems"] == 30 and [r["recipe"] for r in saved["recipes"]] == ["vote", "first", "vote8"]
    assert saved["recipes"][0]["accuracy"]["estimate"] == 1.0
    lost, tied = saved["differences"]
    right = sum((3 * i + 3) % 2 == 0 for i in range(30))  # write_sums: a + b = (i + 2) + (2i + 1)
    assert right == 15
    assert (lost["recipe"], lost["baseline"]) == ("vote", "first") and lost["difference"]["only_a"] == 30 - right
    assert lost["difference"]["estimate"] == pytest.approx(1 - right / 30) and lost["difference"]["low"] > 0
    assert tied["difference"]["estimate"] == 0.0 and tied["discordance"] == 0.0
    assert lost["problems_to_detect"] == problems_to_detect(0.10, discordance=(30 - right) / 30)

    shown = result.stdout
    summary = json.loads((out / "first/summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(right / 30) and summary["accuracy_ci"]["low"] < summary["accuracy"]
    assert accuracy_text(summary["accuracy"], Interval(**summary["accuracy_ci"])) in shown
    assert f"vote − first: {100 * (1 - right / 30):+.1f} pts [" in shown and "], significant · vote alone right on 15" in shown
    assert "vote − vote8: +0.0 pts [+0.0, +0.0], not significant (CI includes 0) · vote alone right on 0" in shown
    assert f"≈{lost['problems_to_detect']} for vote vs first" in shown and "this table has 30" in shown
    assert f"(comparison: {out / 'comparison.json'})" in shown


def test_cli_run_shows_partial_credit_beside_exact_accuracy(tmp_path: Path, fake_backend, monkeypatch) -> None:
    from orchestra import cli, terminal

    monkeypatch.setattr(terminal.console, "_width", 300)
    exact = JsonlTask.score
    monkeypatch.setattr(JsonlTask, "score", lambda self, problem, text, answer: max(0.5, exact(self, problem, text, answer)))
    FakeBackend.script = first_sample_right_on_even_sums
    _, first, _ = write_recipes(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli.app, ["run", str(first), "--task", write_sums(tmp_path / "sums.jsonl", 6),
                                          "--out", str(out), "--no-cache"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    right = sum((3 * i + 3) % 2 == 0 for i in range(6))
    assert summary["accuracy"] == right / 6 and summary["partial_credit"] == pytest.approx((right + 0.5 * (6 - right)) / 6)
    assert "partial" in result.stdout and f"{summary['partial_credit']:.1%}" in result.stdout
    assert not (out / "comparison.json").exists()
