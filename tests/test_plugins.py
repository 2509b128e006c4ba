"""User-defined techniques and scorers: registered in-process or through entry points."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import orchestra
from orchestra import Recipe, RecipeError
from orchestra import registry as registry_module
from orchestra import scorer as scorer_module
from orchestra import technique as technique_module
from orchestra.candidate import Candidate
from orchestra.technique import technique

from fake_backend import fake_backend, vote_recipe, write_sums  # noqa: F401


class KeepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = 1


@technique("keep_shortest", KeepParams, needs_model=False)
async def keep_shortest(ctx, inputs: list[Candidate], params: KeepParams) -> list[Candidate]:
    """Keep the shortest candidates (a toy selector defined by a user)."""
    return sorted(inputs, key=lambda c: len(c.text))[: params.count]


def test_a_technique_defined_in_user_code_runs_in_a_recipe(tmp_path: Path, fake_backend):  # noqa: F811
    data = vote_recipe()
    data["nodes"][1] = {"id": "short", "technique": "keep_shortest", "inputs": ["samples"], "params": {"count": 2}}
    data["output"] = "short"
    result = orchestra.run(Recipe.model_validate(data), write_sums(tmp_path / "s.jsonl", 2), cache=False)
    assert all(r.status == "ok" and r.output_candidates == 2 for r in result.results)
    with pytest.raises(RecipeError, match=r"nodes\[1\]\.params\.count"):
        data["nodes"][1]["params"] = {"count": "two"}
        Recipe.model_validate(data)


def test_a_technique_needing_a_missing_capability_fails_at_validation(fake_backend):  # noqa: F811
    @technique("needs_hidden", requires=("hidden_states",), min_inputs=0)
    async def needs_hidden(ctx, inputs, params):
        return []

    data = vote_recipe()
    data["nodes"] = [{"id": "h", "technique": "needs_hidden"}]
    data.pop("output")
    with pytest.raises(RecipeError, match="needs hidden_states, which backend 'fake' does not provide"):
        Recipe.model_validate(data)


def test_entry_points_register_third_party_techniques_and_scorers(monkeypatch, tmp_path: Path):
    (tmp_path / "orchestra_test_plugin.py").write_text(
        "from orchestra.scorer import scorer\n"
        "from orchestra.technique import technique\n\n"
        "@technique('plugin_identity', needs_model=False)\n"
        "async def plugin_identity(ctx, inputs, params):\n"
        "    return inputs\n\n"
        "@scorer('plugin_length')\n"
        "async def plugin_length(ctx, candidate):\n"
        "    return float(len(candidate.text))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def fake_entry_points(group: str):
        if group in ("orchestra.techniques", "orchestra.scorers"):
            return [EntryPoint("plugin", "orchestra_test_plugin", group)]
        return []

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    monkeypatch.setattr(technique_module.TECHNIQUES, "_loaded", False)
    monkeypatch.setattr(scorer_module.SCORERS, "_loaded", False)
    assert "plugin_identity" in technique_module.techniques()
    assert "plugin_length" in scorer_module.scorers()
    monkeypatch.delitem(sys.modules, "orchestra_test_plugin")


def test_a_scorer_needing_logprobs_fails_at_validation_on_a_backend_without_them(fake_backend):  # noqa: F811
    from orchestra.backends import BACKENDS

    class NoLogprobs(fake_backend):  # type: ignore[misc, valid-type]
        capabilities = frozenset()

    BACKENDS.add("fake-no-logprobs", NoLogprobs)
    data = vote_recipe()
    data["models"]["m"]["backend"] = "fake-no-logprobs"
    data["nodes"][1] = {"id": "pick", "technique": "best_of_n", "inputs": ["samples"], "params": {"scorer": "mean_logprob"}}
    data["output"] = "pick"
    with pytest.raises(RecipeError, match=r"nodes\[1\]\.model: 'best_of_n' needs logprobs"):
        Recipe.model_validate(data)
    data["nodes"][1]["params"] = {"scorer": "task"}
    Recipe.model_validate(data)  # the ground-truth scorer needs nothing of the backend
    data["nodes"][1] = {"id": "pick", "technique": "majority_vote", "inputs": ["samples"], "params": {"weight_by": "mean_logprob"}}
    with pytest.raises(RecipeError, match=r"nodes\[1\]\.model: 'majority_vote' needs logprobs"):
        Recipe.model_validate(data)
    data["nodes"][1]["params"] = {}
    Recipe.model_validate(data)  # unweighted votes need nothing
