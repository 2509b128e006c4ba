"""Real output folders of every kind the report reads, made in seconds on the scripted fake model.

In `run` and `compare` folders one problem of four is answered wrong by every sample (the rest are
right by majority, and greedy's single sample is always wrong), so the filters have work to do.

`make_folder(kind, tmp_path)` runs the command a user would (`orchestra run`, `run --compare`,
`scale`, `search`) through the CLI with the fake backend registered (use the `fake_backend` fixture),
so a report test reads exactly what those commands write, never a hand-made imitation of it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from fake_backend import vote_recipe, write_sums
from search_fixtures import fake_space, write_split_sums
from typer.testing import CliRunner

#: Folder kinds, as the page's `<main data-kind>` names them ("stepwise" is a run of a tree search).
KINDS = ("run", "compare", "stepwise", "scale", "search")


def _stepwise_recipe() -> dict:
    """Particle filtering on the fake model: ";" ends a step, and sample k answers after 1 or 2 steps."""
    return {
        "name": "particles",
        "models": {"m": {"backend": "fake", "model": "fake-model"}},
        "nodes": [{"id": "search", "technique": "particle_filtering",
                   "params": {"delimiter": ";", "step_tokens": 8, "max_steps": 4, "rollouts": 4}}],
    }


def _stepwise_script(request, prompt: str, index: int) -> str:
    depth = prompt.split("assistant: ", 1)[1].count(";") if "assistant: " in prompt else 0
    if depth >= 2 or (depth == 1 and index % 3 == 0):
        return f"Answer: {index % 2 + 7}"
    return f"step {depth}.{index} ;"


def _one_wrong_script(request, prompt: str, index: int) -> str | None:
    """Every sample of the second problem ("Compute 3 + 3 =") answers 99, so a page has right and wrong problems."""
    return "Let me add. Answer: 99" if "Compute 3 + 3 =" in prompt else None


def _invoke(args: list[str]) -> None:
    from orchestra.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def make_folder(kind: str, tmp_path: Path) -> Path:
    """The output folder of one `kind` of command, run on the fake backend."""
    out = tmp_path / kind
    cache = ["--cache", str(tmp_path / "cache.sqlite")]
    if kind == "search":
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(fake_space()))
        task = write_split_sums(tmp_path / "split-sums.jsonl", dev=4, test=2)
        _invoke(["search", str(space), "--task", task, "--trials", "4", "--dev-limit", "4", "--first-rung", "2",
                 "--test-limit", "2", "--out", str(out), *cache])
        return out
    from fake_backend import FakeBackend

    task = write_sums(tmp_path / "sums.jsonl", 4)
    FakeBackend.script = _stepwise_script if kind == "stepwise" else _one_wrong_script
    vote = tmp_path / "vote.yaml"
    vote.write_text(yaml.safe_dump(vote_recipe(n=4)))
    if kind == "run":
        _invoke(["run", str(vote), "--task", task, "--out", str(out), *cache])
    elif kind == "compare":
        greedy = tmp_path / "greedy.yaml"
        greedy.write_text(yaml.safe_dump(vote_recipe("greedy", n=1)))
        _invoke(["run", str(vote), "--compare", str(greedy), "--task", task, "--out", str(out), *cache])
    elif kind == "stepwise":
        recipe = tmp_path / "particles.yaml"
        recipe.write_text(yaml.safe_dump(_stepwise_recipe()))
        _invoke(["run", str(recipe), "--task", task, "--out", str(out), *cache])
    elif kind == "scale":
        _invoke(["scale", str(vote), "--task", task, "--n", "1,2,4", "--out", str(out), *cache])
    else:
        raise ValueError(f"no such folder kind: {kind}")
    return out
