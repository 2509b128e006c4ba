"""End to end on the real default model: the CLI and the Python API, small limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orchestra
from orchestra import Node, Recipe
from orchestra.backends import ModelSpec
from orchestra.cli import app

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
TASK = "reasoning_gym:chain_sum?min_terms=2&max_terms=2&max_digits=1"
SMALL = {"small": ModelSpec(dtype="float32")}


def test_cli_run_compare_and_resume(tmp_path: Path):
    out = tmp_path / "run"
    args = [
        "run", str(ROOT / "recipes/quickstart.yaml"), "--compare", str(ROOT / "recipes/greedy.yaml"),
        "--task", TASK, "--limit", "3", "--out", str(out), "--cache", str(tmp_path / "cache.sqlite"),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "quickstart" in first.output and "greedy" in first.output and "acc" in first.output
    shown = " ".join(first.output.split())  # the terminal is 80 columns: long lines wrap
    assert "quickstart − greedy: " in shown and "this table has 3" in shown
    comparison = json.loads((out / "comparison.json").read_text())
    assert [r["recipe"] for r in comparison["recipes"]] == ["quickstart", "greedy"]
    assert comparison["differences"][0]["difference"]["problems"] == 3
    for name in ("quickstart", "greedy"):
        folder = out / name
        results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        assert len(results) == 3
        assert all(r["status"] == "ok" and r["usage"]["completion_tokens"] > 0 for r in results)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["complete"] and summary["problems"] == 3
        assert (folder / "trace.jsonl").exists() and (folder / "run.json").exists()
    votes = [json.loads(x) for x in (out / "quickstart/trace.jsonl").read_text().splitlines()]
    samples = {c["id"] for t in votes if t["node"] == "samples" for c in t["outputs"]}
    for t in votes:
        if t["node"] == "vote":
            assert t["outputs"], "every problem had some answer to vote on"
            assert set(t["outputs"][0]["parents"]) <= samples

    # Rerunning into the same folder resumes: no problem runs twice.
    lines_before = (out / "quickstart/results.jsonl").read_text()
    again = CliRunner().invoke(app, [*args[:-2], "--no-cache"])
    assert again.exit_code == 0, again.output
    assert (out / "quickstart/results.jsonl").read_text() == lines_before

    # A fresh folder with the same cache replays every sample instead of generating it.
    replay = CliRunner().invoke(app, [*args[:-3], str(tmp_path / "replay"), *args[-2:]])
    assert replay.exit_code == 0, replay.output
    replayed = json.loads((tmp_path / "replay/quickstart/summary.json").read_text())
    assert replayed["usage"]["cache_hits"] == 3 * 16
    assert replayed["accuracy"] == json.loads((out / "quickstart/summary.json").read_text())["accuracy"]


def test_python_api_builds_runs_and_replays(tmp_path: Path):
    recipe = Recipe(
        name="best-of-4",
        models=SMALL,
        nodes=[
            Node(id="gen", technique="sample", params={"n": 4, "temperature": 0.8, "max_tokens": 48}),
            Node(id="pick", technique="best_of_n", inputs=["gen"], params={"scorer": "mean_logprob"}),
        ],
    )
    cache = tmp_path / "cache.sqlite"
    first = orchestra.run(recipe, TASK, limit=3, cache=cache)
    assert [r.problem_id for r in first.results] == [f"chain_sum/test/{i}" for i in range(3)]
    assert all(isinstance(r, orchestra.ProblemResult) and r.status == "ok" for r in first.results)
    assert 0.0 <= first.accuracy <= 1.0
    assert first.summary.usage.completion_tokens > 0 and first.summary.usage.cache_hits == 0
    for r in first.results:
        assert r.usage_by_node["gen"].calls == 1 and "pick" not in r.usage_by_node

    second = orchestra.run(recipe, TASK, limit=3, cache=cache)
    assert second.summary.usage.cache_hits == 12
    assert [r.answer for r in second.results] == [r.answer for r in first.results]
    assert second.summary.usage.completion_tokens == first.summary.usage.completion_tokens


def test_budget_cuts_a_real_run_short(tmp_path: Path):
    recipe = orchestra.load_recipe(ROOT / "recipes/quickstart.yaml").model_copy(
        update={"budget": orchestra.Budget(per_problem=orchestra.Limits(completion_tokens=40))}
    )
    result = orchestra.run(recipe, TASK, limit=2, cache=False)
    for r in result.results:
        assert r.usage.completion_tokens <= 40
        assert r.shrunk_calls == 1  # 8 samples x 128 tokens did not fit: max_tokens became 5


def test_humaneval_is_scored_by_running_its_tests(tmp_path: Path):
    recipe = Recipe(
        name="humaneval-greedy",
        models=SMALL,
        nodes=[Node(id="code", technique="sample", params={"temperature": 0, "max_tokens": 160})],
    )
    result = orchestra.run(recipe, "humaneval", limit=2, cache=False, out=tmp_path / "he")
    assert [r.status for r in result.results] == ["ok", "ok"]
    assert all(r.score in (0.0, 1.0) for r in result.results)
    assert (tmp_path / "he/results.jsonl").read_text().count("\n") == 2


def test_quickstart_replays_every_sample_from_the_shipped_file(tmp_path: Path):
    """`make quickstart` fits its minutes only because every sample it needs is in the replay file:
    a change to the quickstart or greedy recipe (or to how requests are keyed) that misses it fails here."""
    import gzip
    import re
    import shutil

    makefile = (ROOT / "Makefile").read_text()
    task = re.search(r"^QUICKSTART_TASK := (.+)$", makefile, re.M).group(1)
    replay = re.search(r"^REPLAY \?= (.+)$", makefile, re.M).group(1)
    cache = tmp_path / "replay.sqlite"
    with gzip.open(ROOT / replay) as packed, cache.open("wb") as plain:
        shutil.copyfileobj(packed, plain)
    accuracy = {}
    for name, samples in (("quickstart", 16), ("greedy", 1)):
        result = orchestra.run(ROOT / f"recipes/{name}.yaml", task, limit=200, cache=cache)
        assert result.summary.usage.cache_hits == 200 * samples, name
        accuracy[name] = result.accuracy
    assert accuracy == {"quickstart": pytest.approx(0.205), "greedy": pytest.approx(0.145)}  # README's first table
