"""A plugin adds a technique, a scorer, a process reward model, a task kind and a backend with an
options block of its own — each one definition in one file, registered through its entry-point
group and nothing else — and a recipe that uses all five runs end to end.

This is the promise of `orchestra.registry`: every kind of extension is found the same way.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import orchestra
from orchestra import registry as registry_module
from orchestra.backends import BACKENDS
from orchestra.recipe import Recipe, RecipeError
from orchestra.reward.process_reward import PROCESS_REWARDS
from orchestra.scorer import SCORERS
from orchestra.tasks import TASK_KINDS, load_task
from orchestra.technique import TECHNIQUES

PLUGIN = '''
"""An outside package's extensions, one definition each."""

from pydantic import BaseModel, ConfigDict, Field

from orchestra.backends import Backend, BackendInfo, Completion, GenerationResult, backend
from orchestra.problem import Problem
from orchestra.reward.process_reward import PRMSpec, Step, process_reward_model, score_steps
from orchestra.scorer import ScorerName, apply_scorer, scorer
from orchestra.tasks import Task, task_kind
from orchestra.technique import technique
from orchestra.usage import Usage


@task_kind("plugin_doubling")
class DoublingTask(Task):
    """'What is twice K?' for K = 1..size, in every split."""

    def __init__(self, *, spec=None, answer_format=None, size: int = 3):
        self.spec, self.size = spec or "plugin_doubling", size
        self.answer_format = answer_format or self.default_answer_format

    def problems(self, split="test", limit=None):
        items = [Problem.from_prompt(f"k{k}", f"What is twice {k}?", answer=str(2 * k)) for k in range(1, self.size + 1)]
        return items[:limit] if limit is not None else items

    def score(self, problem, text, answer):
        return 1.0 if answer == problem.answer else 0.0


class ScriptedSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Sample i answers twice K plus mistakes[i % len(mistakes)].
    mistakes: tuple[int, ...] = Field(min_length=1)


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scripted: ScriptedSettings


@backend("plugin_scripted")
class ScriptedBackend(Backend):
    """Answers doubling questions, wrong by its configured mistakes."""

    capabilities = frozenset({"logprobs"})
    Options = ScriptedOptions

    async def complete(self, request, prompt):
        k = int(prompt.text.rsplit("twice ", 1)[1].split("?")[0])
        mistakes = self.options.scripted.mistakes
        completions = tuple(
            Completion(text=f"I think. Answer: {2 * k + mistakes[(request.first_index + i) % len(mistakes)]}",
                       completion_tokens=4, finish_reason="stop", logprobs=(-0.1,) * 4)
            for i in range(request.n)
        )
        usage = Usage(calls=1, prompt_tokens=prompt.tokens, completion_tokens=4 * request.n)
        return GenerationResult(completions=completions, prompt_tokens=prompt.tokens, usage=usage)


@scorer("plugin_evenness")
async def evenness(ctx, candidate):
    """1 for an even answer: twice anything is even."""
    return 1.0 if candidate.answer is not None and int(candidate.answer) % 2 == 0 else 0.0


@process_reward_model("plugin_short_steps")
async def short_steps(ctx, spec, steps):
    """Shorter steps score higher."""
    return [1.0 / (1.0 + len(step.text)) for step in steps]


class PickParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scorer: ScorerName = "plugin_evenness"
    prm: PRMSpec = PRMSpec(name="plugin_short_steps")


@technique("plugin_pick", PickParams, needs_model=False)
async def pick(ctx, inputs, params):
    """Keep the candidate the scorer likes best, ties broken by the PRM."""
    scored = await apply_scorer(ctx, params.scorer, inputs)
    rated = [(c.scores[params.scorer], await score_steps(ctx, params.prm, [Step(text=c.text)]), c) for c in scored]
    best = max(rated, key=lambda item: (item[0], item[1]))
    return [best[2].with_score("prm", best[1])]
'''

GROUPS = ("orchestra.techniques", "orchestra.scorers", "orchestra.process_rewards", "orchestra.backends", "orchestra.tasks")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch):
    """The plugin module on sys.path, announced in every entry-point group, as an installed package would be."""
    (tmp_path / "orchestra_plugin_example.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        registry_module, "entry_points",
        lambda group: [EntryPoint("example", "orchestra_plugin_example", group)] if group in GROUPS else [],
    )
    for kind in (TECHNIQUES, SCORERS, PROCESS_REWARDS, BACKENDS, TASK_KINDS):
        monkeypatch.setattr(kind, "_loaded", False)
    yield
    sys.modules.pop("orchestra_plugin_example", None)


def recipe(mistakes: list[int]) -> Recipe:
    return Recipe.model_validate({
        "name": "plugins",
        "models": {"m": {"backend": "plugin_scripted", "model": "anything", "scripted": {"mistakes": mistakes}}},
        "nodes": [
            {"id": "draw", "technique": "sample", "params": {"n": 3}},
            {"id": "pick", "technique": "plugin_pick", "inputs": ["draw"]},
        ],
    })


def test_a_recipe_runs_on_a_plugin_technique_scorer_prm_task_and_backend(plugin, tmp_path: Path) -> None:
    task = load_task("plugin_doubling?size=4")
    assert [p.answer for p in task.problems()] == ["2", "4", "6", "8"]

    # every sample is odd (wrong) but the second, which is right: the scorer must find it
    result = orchestra.run(recipe([1, 0, 3]), task, cache=False, out=tmp_path / "run")
    assert [r.status for r in result.results] == ["ok"] * 4
    assert result.summary.accuracy == 1.0
    # all wrong: the backend read its options block (no sample can be right)
    wrong = orchestra.run(recipe([1, 3]), task, cache=False, out=tmp_path / "wrong")
    assert wrong.summary.accuracy == 0.0


def test_a_plugin_backend_validates_its_own_options_block(plugin) -> None:
    with pytest.raises(RecipeError, match=r"models\.m\.scripted\.mistakes"):
        recipe([])
    with pytest.raises(RecipeError, match="`speculative` is not a setting of backend 'plugin_scripted'"):
        Recipe.model_validate({
            "name": "x", "models": {"m": {"backend": "plugin_scripted", "scripted": {"mistakes": [0]}, "speculative": {}}},
            "nodes": [{"id": "a", "technique": "sample"}],
        })


def test_every_registry_refuses_a_second_entry_under_a_taken_name(plugin) -> None:
    for kind in (TECHNIQUES, SCORERS, PROCESS_REWARDS, BACKENDS, TASK_KINDS):
        taken = kind.names()[0]
        with pytest.raises(registry_module.DuplicateName, match=taken):
            kind.add(taken, object())


def test_every_registry_names_the_closest_entries_of_an_unknown_name(plugin) -> None:
    for kind, typo, meant in (
        (TECHNIQUES, "majorty_vote", "majority_vote"),
        (SCORERS, "mean_logprb", "mean_logprob"),
        (PROCESS_REWARDS, "self_certanty", "self_certainty"),
        (BACKENDS, "locl", "local"),
        (TASK_KINDS, "humanevl", "humaneval"),
    ):
        with pytest.raises(registry_module.UnknownName, match=f"did you mean {meant}"):
            kind.get(typo)
