"""A run the generation cache replays entirely never loads the model's weights, and gives what a
run with the weights loaded gives.

The quickstart replays every sample from recipes/replay/quickstart.sqlite.gz; loading the
default model there meant converting its GGUF file first, a minute of a new user's first run.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

import orchestra
from orchestra.backends import ModelSpec, base, get_backend
from orchestra.backends import local
from orchestra.models import converted_folder, hf_folder, resolve

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [ROOT / "recipes" / "quickstart.yaml", ROOT / "recipes" / "greedy.yaml"]
TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"  # the Makefile's
SPEC = ModelSpec(model="smollm2-135m-instruct", dtype="float32")  # the recipes' model


def _replay_file(tmp_path: Path) -> Path:
    path = tmp_path / "replay.sqlite"
    with gzip.open(ROOT / "recipes" / "replay" / "quickstart.sqlite.gz") as packed, path.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return path


def _outcomes(recipe: Path, replay: Path) -> list[tuple]:
    """Per problem: answer, score, coverage and usage (all but wall time)."""
    result = orchestra.run(recipe, TASK, limit=20, cache=replay)
    return [
        (r.problem_id, r.answer, r.score, r.coverage, r.usage.model_dump(exclude={"seconds"}))
        for r in result.results
    ]


def _refuse_weights(name: str, dtype: str = "float32"):
    raise AssertionError(f"the weights of {name} were loaded, but every sample was in the cache")


def test_a_replayed_run_loads_no_weights_and_matches_a_run_with_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    replay = _replay_file(tmp_path)

    monkeypatch.setattr(base, "_LOADED", {})  # fresh backends, whatever other tests loaded
    monkeypatch.setattr(local, "load_pretrained", _refuse_weights)
    replayed = [_outcomes(recipe, replay) for recipe in RECIPES]
    assert not get_backend(SPEC).weights_loaded
    assert not converted_folder(resolve(SPEC.model)).exists()  # nothing converted either
    assert sum(r[4]["cache_hits"] for r in replayed[0]) == 20 * 16  # all 16 samples of 20 problems

    # As before lazy loading: the converted model's tokenizer, its weights loaded before the run.
    monkeypatch.undo()
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(base, "_LOADED", {})
    hf_folder(SPEC.model)
    loaded = get_backend(SPEC)
    assert loaded.engine is not None and loaded.weights_loaded
    assert loaded.parameters == sum(p.numel() for p in loaded.model.parameters())
    assert loaded.context_length == loaded.shape.context_length
    assert [_outcomes(recipe, replay) for recipe in RECIPES] == replayed
