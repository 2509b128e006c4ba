"""Step-wise search on the real default model: token-exact continuation from the prefix
cache, every search method end to end, the LLM PRM, and hidden states for PRMs that read them.

Small on purpose (one or two problems, 2 rollouts, short steps): these check that the
parts work together on a real model, not how well they search (bench/stepwise_scaling.py).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

import orchestra
from orchestra.backends import GenerationRequest
from orchestra.backends import get_backend
from orchestra.problem import Message
from orchestra.reward.process_reward import process_reward_model
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe
from test_engine import traces

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&operators=%2B"
SMALL = {"model": "smollm2-135m-instruct", "dtype": "float32"}
STEPS = {"rollouts": 2, "max_steps": 2, "step_tokens": 16, "temperature": 0.7}

#: Hidden-state rows the test PRM below saw, by step text.
SEEN_HIDDEN: dict[str, int] = {}


@process_reward_model("test_reads_hidden_states", requires=("hidden_states",))
async def reads_hidden_states(ctx, spec, steps):
    """A PRM that only checks it was handed every step's hidden state."""
    for step in steps:
        assert step.hidden_state is not None, "step generation did not fill the hidden state"
        SEEN_HIDDEN[step.text] = len(step.hidden_state)
    return [0.5 for _ in steps]


def search(tmp_path: Path, technique: str, limit: int = 1, **params):
    recipe = Recipe.model_validate({
        "name": technique, "models": {"small": SMALL},
        "nodes": [{"id": "search", "technique": technique, "params": {**STEPS, **params}}],
    })
    out = tmp_path / technique
    result = orchestra.run(recipe, TASK, limit=limit, out=out, cache=False)
    assert all(r.status == "ok" for r in result.results), [r.error for r in result.results]
    return result, traces(out)


def test_local_backend_continues_a_step_token_exactly_from_its_cache() -> None:
    backend = get_backend(ModelSpec(**SMALL))
    question = (Message(role="user", content="Give two tips for sleeping well, as two paragraphs."),)
    first = GenerationRequest(messages=question, max_tokens=48, stop=("\n\n",), temperature=0.0)

    async def go():
        step = (await backend.generate(first)).completions[0]
        partial = (*question, Message(role="assistant", content=step.text + (step.stopped_by or "")))
        follow = GenerationRequest(messages=partial, continuation_ids=step.token_ids, max_tokens=8, temperature=0.0)
        return step, follow, await backend.generate(follow)

    step, follow, result = asyncio.run(go())
    assert step.finish_reason == "stop" and step.stopped_by == "\n\n" and step.token_ids
    prompt_ids = list(backend.prepare(first).token_ids)
    assert list(backend.prepare(follow).token_ids) == [*prompt_ids, *step.token_ids]  # exactly the generated tokens
    # the prompt and the step were in the prefix cache: at most the last token is prefilled again
    assert result.usage.cached_prompt_tokens >= len(prompt_ids) + len(step.token_ids) - 1


@pytest.mark.parametrize(
    ("technique", "extra"),
    [
        ("particle_filtering", {}),
        ("beam_search", {"beam_width": 2}),
        ("dvts", {"beam_width": 1}),
        ("mcts", {}),
        ("best_first", {}),
        ("prm_best_of_n", {"select": "vote"}),
    ],
)
def test_each_search_answers_within_its_step_budget(tmp_path: Path, technique: str, extra: dict) -> None:
    result, spans = search(tmp_path, technique, **extra)
    problem = result.results[0]
    outputs = spans[(problem.problem_id, "search")]["outputs"]
    assert outputs and all(o["text"] for o in outputs)
    assert all(0.0 < o["scores"]["prm"] <= 1.0 for o in outputs)  # self-certainty: exp(mean logprob)
    assert all(1 <= o["scores"]["steps"] <= STEPS["max_steps"] for o in outputs)
    # never more than rollouts x max_steps steps of step_tokens each
    assert problem.usage.completion_tokens <= STEPS["rollouts"] * STEPS["max_steps"] * STEPS["step_tokens"]
    assert problem.usage.cached_prompt_tokens > 0  # continuations found their prefix in the cache


def test_llm_prm_scores_with_verdict_probabilities(tmp_path: Path) -> None:
    result, spans = search(tmp_path, "particle_filtering", prm={"name": "llm", "aggregate": "min"})
    problem = result.results[0]
    outputs = spans[(problem.problem_id, "search")]["outputs"]
    assert all(0.0 < o["scores"]["prm"] < 1.0 and not math.isnan(o["scores"]["prm"]) for o in outputs)
    generated = sum(o["steps"] for o in [s["scores"] for s in outputs])
    # one generating call per step at most, plus one 1-token verdict per distinct prefix judged
    assert problem.usage.calls > generated / STEPS["rollouts"]


def test_hidden_states_reach_prms_that_read_them(tmp_path: Path) -> None:
    SEEN_HIDDEN.clear()
    search(tmp_path, "beam_search", beam_width=1, prm={"name": "test_reads_hidden_states"})
    assert SEEN_HIDDEN and set(SEEN_HIDDEN.values()) == {576}  # SmolLM2-135M's hidden size


def test_greedy_steps_reproduce_greedy_decoding_token_for_token(tmp_path: Path) -> None:
    """Step by step, with a stop at every line and each step continued from its token ids,
    greedy decoding must write exactly what one uninterrupted greedy call writes."""
    whole = orchestra.run(Recipe.model_validate({
        "name": "greedy", "models": {"small": SMALL},
        "nodes": [{"id": "a", "technique": "sample", "params": {"n": 1, "temperature": 0.0, "max_tokens": 96}}],
    }), TASK, limit=1, cache=False).results[0]
    stepped, _ = search(tmp_path, "prm_best_of_n", rollouts=1, temperature=0.0, delimiter="\n", max_steps=96, step_tokens=96)
    assert stepped.results[0].text == whole.text
    assert stepped.results[0].usage.completion_tokens == whole.usage.completion_tokens
    assert stepped.results[0].usage.calls > 2  # it really went step by step
