"""`orchestra search` end to end on the real default model: a tiny study whose best.yaml `orchestra run` accepts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestra import cli
from orchestra.recipe import load_recipe

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"


def test_tiny_search_on_the_default_model_writes_a_runnable_best_recipe(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tiny",
        "models": {"small": {"model": "smollm2-135m-instruct", "dtype": "float32"}},
        "layers": [
            {"id": "gen", "options": [{"technique": "sample", "params": {
                "n": {"choices": [1, 2]}, "temperature": 0.7, "max_tokens": 24}}]},
            {"id": "select", "options": [{"technique": "majority_vote"},
                                         {"label": "certainty", "technique": "best_of_n", "params": {"scorer": "mean_logprob"}}]},
        ],
    }))
    out = tmp_path / "out"
    cache = tmp_path / "cache.sqlite"
    result = CliRunner().invoke(cli.app, [
        "search", str(space), "--task", TASK, "--trials", "3", "--dev-limit", "3", "--first-rung", "0",
        "--sampler", "random", "--budget", "200", "--out", str(out), "--cache", str(cache), "--test-limit", "3",
    ])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and all(r["state"] == "COMPLETE" for r in rows)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and 0 < float(r["cost"]) <= 2 * 24 for r in rows)
    # trials after the first reuse its samples: the pool of n=2 holds n=1 as a prefix
    assert sum(int(r["samples_replayed"] or 0) for r in rows) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["winner"]["dev_problems"] == 3 and [r["recipe"] for r in summary["test"]["rows"]][-1] == "greedy"
    best = load_recipe(out / "best.yaml")
    assert best.nodes[0].technique == "sample" and (out / "pareto.png").stat().st_size > 0
    run = CliRunner().invoke(cli.app, ["run", str(out / "best.yaml"), "--task", TASK, "--split", "dev", "--limit", "3",
                                       "--out", str(tmp_path / "run"), "--cache", str(cache)])
    assert run.exit_code == 0, run.output
