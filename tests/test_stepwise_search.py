"""Step-wise search control flow with the scripted backend: step boundaries, finished
answers never extended, beam bookkeeping, budgets, the LLM PRM's memo. No model; fast.

Scripted replies use ";" as the step delimiter (the fake backend joins words with
spaces, so it never writes a blank line): at depth d (the number of ";" already in
the partial answer) sample k writes "s{d}.{k} ;" — a step boundary — unless it is
deep enough to answer, "Answer: 7", which ends the answer.
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pytest
from fake_backend import FakeBackend, fake_backend, write_sums  # noqa: F401  (fixture)

import orchestra
from orchestra.budget import Meter
from orchestra.context import Context, Ledger, ModelHandle
from orchestra.problem import Problem
from orchestra.reward.process_reward import PRMSpec, Step, score_steps
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe
from orchestra.techniques.stepwise._step_generation import PartialAnswer, StepGenerator, StepParams
from orchestra.step_events import STEP_RECORDED, partial_id
from test_engine import traces

PARTIAL = "assistant: "


def depth_of(prompt: str) -> int:
    return prompt.split(PARTIAL, 1)[1].count(";") if PARTIAL in prompt else 0


def scripted(request, prompt: str, index: int) -> str:
    """Sample k answers at depth 1 when k is a multiple of 3, otherwise at depth 2."""
    depth = depth_of(prompt)
    if depth >= 2 or (depth == 1 and index % 3 == 0):
        return "Answer: 7"
    return f"s{depth}.{index} ; trailing words"


def recipe(technique: str, budget: dict | None = None, **params) -> Recipe:
    data = {
        "name": technique,
        "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "search", "technique": technique,
                   "params": {"delimiter": ";", "step_tokens": 8, "max_steps": 6, **params}}],
    }
    if budget:
        data["budget"] = budget
    return Recipe.model_validate(data)


def run(tmp_path: Path, technique: str, budget: dict | None = None, **params):
    out = tmp_path / technique
    result = orchestra.run(recipe(technique, budget, **params), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    return result, traces(out)[("p0", "search")]["outputs"]


def context(fake_backend, meters: list[Meter] | None = None) -> Context:
    backend = fake_backend(ModelSpec(backend="fake", model="fake-model"))
    ledger = Ledger(meters=meters or [])
    handle = ModelHandle("m", backend, ledger, "search")
    problem = Problem.from_prompt("p0", "Compute 2 + 1 =")
    return Context(problem, "search", None, {"m": handle}, "m", seed=0, rng=random.Random(0))


def test_steps_end_at_the_delimiter_and_keep_it(fake_backend) -> None:
    asyncio.run(_test_steps_end_at_the_delimiter_and_keep_it(fake_backend))


async def _test_steps_end_at_the_delimiter_and_keep_it(fake_backend) -> None:
    fake_backend.script = scripted
    ctx = context(fake_backend)
    generator = StepGenerator(ctx, StepParams(delimiter=";", step_tokens=8))
    first = await generator.extend(PartialAnswer(), 2)
    assert [p.text for p in first] == ["s0.0 ;", "s0.1 ;"]
    assert not any(p.finished for p in first)
    second = await generator.extend(first[1], 2)  # sample indices go on: 2 and 3
    assert [p.text for p in second] == ["s0.1 ;s1.2 ;", "s0.1 ;Answer: 7"]
    assert second[1].finished and second[1].finish_reason == "stop" and not second[0].finished
    assert [len(p.steps) for p in second] == [2, 2]
    assert fake_backend.log.calls[1].prompt.endswith("assistant: s0.1 ;")
    assert fake_backend.log.calls[1].first_index == 2
    assert all(step.logprobs for p in second for step in p.steps)  # self-certainty reads these
    with pytest.raises(ValueError, match="never extended"):
        await generator.extend(second[1], 1)


def test_max_steps_cuts_an_answer_off(fake_backend) -> None:
    asyncio.run(_test_max_steps_cuts_an_answer_off(fake_backend))


async def _test_max_steps_cuts_an_answer_off(fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "more ; words"
    generator = StepGenerator(context(fake_backend), StepParams(delimiter=";", max_steps=2))
    partial = PartialAnswer()
    for _ in range(2):
        partial = (await generator.extend(partial, 1))[0]
    assert partial.finished and partial.finish_reason == "length" and len(partial.steps) == 2


def test_steps_of_a_fixed_token_count(fake_backend) -> None:
    asyncio.run(_steps_of_a_fixed_token_count(fake_backend))


async def _steps_of_a_fixed_token_count(fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "one two three four five"
    generator = StepGenerator(context(fake_backend), StepParams(delimiter=None, step_tokens=3))
    [partial] = await generator.extend(PartialAnswer(), 1)
    assert partial.text == "one two three" and not partial.finished  # cut by count: a boundary
    assert fake_backend.log.calls[0].stop == () and fake_backend.log.calls[0].max_tokens == 3


@pytest.mark.parametrize("technique", ["particle_filtering", "beam_search", "dvts", "mcts", "best_first", "prm_best_of_n"])
def test_finished_answers_are_never_extended(tmp_path: Path, fake_backend, technique: str) -> None:
    fake_backend.script = scripted
    extra = {"beam_width": 2} if technique in ("beam_search", "dvts") else {}
    result, outputs = run(tmp_path, technique, rollouts=4, **extra)
    assert result.results[0].status == "ok"
    generating = [c for c in fake_backend.log.calls if "Is every step" not in c.prompt]
    assert generating, "the search generated nothing"
    for call in generating:  # no call continues an answer that already wrote its final answer
        assert "Answer:" not in call.prompt.split(PARTIAL, 1)[-1] or PARTIAL not in call.prompt
    assert outputs[0]["answer"] == "7"
    assert all(o["text"].endswith("Answer: 7") for o in outputs)
    assert all(0 < o["scores"]["prm"] <= 1 for o in outputs)


def test_particle_filter_keeps_finished_particles_out_of_resampling(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = scripted
    _, outputs = run(tmp_path, "particle_filtering", rollouts=6, resampler="multinomial")
    # every particle ends up finished exactly once: the population shrinks, never regrows
    assert len(outputs) == 6
    by_depth = [sum(c.n for c in fake_backend.log.calls if depth_of(c.prompt) == d) for d in range(4)]
    # round 2 draws samples 6..11, of which 6 and 9 answer: only 4 particles are left to grow,
    # whatever resampling did (copies of a finished particle would have made it 6)
    assert by_depth == [6, 6, 4, 0]


def test_beam_search_keeps_n_over_m_beams(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "Answer: 7" if depth_of(prompt) >= 2 else f"s{index} ; x"
    run(tmp_path, "beam_search", rollouts=6, beam_width=3)
    calls = [(depth_of(c.prompt), c.n) for c in fake_backend.log.calls]
    # round 1: the empty answer spawns N = 6; then N / M = 2 beams spawn M = 3 each, twice
    assert calls == [(0, 6), (1, 3), (1, 3), (2, 3), (2, 3)]


def test_dvts_grows_independent_subtrees(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "Answer: 7" if depth_of(prompt) >= 2 else f"s{index} ; x"
    _, outputs = run(tmp_path, "dvts", rollouts=6, beam_width=3)
    calls = [(depth_of(c.prompt), c.n) for c in fake_backend.log.calls]
    # 6 / 3 = 2 subtrees, each one beam spawning 3 per round
    assert calls == [(0, 2), (1, 3), (1, 3), (2, 3), (2, 3)]
    assert len(outputs) == 2  # one answer per subtree


@pytest.mark.parametrize("technique", ["particle_filtering", "beam_search", "mcts", "best_first"])
def test_budget_is_respected_and_the_search_still_answers(tmp_path: Path, fake_backend, technique: str) -> None:
    fake_backend.script = lambda request, prompt, index: f"s{index} word word ; x"  # never finishes on its own
    extra = {"beam_width": 2} if technique == "beam_search" else {}
    result, outputs = run(
        tmp_path, technique, budget={"per_problem": {"completion_tokens": 20}}, rollouts=4, **extra
    )
    problem = result.results[0]
    assert problem.usage.completion_tokens <= 20
    assert problem.status == "ok" and outputs  # cut-off partial answers, best first
    assert all(o["finish_reason"] == "length" for o in outputs)


def test_step_allowance_bounds_tree_searches(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: f"s{index} ; x"  # never finishes before max_steps
    run(tmp_path, "mcts", rollouts=2, max_steps=3, branching=2)
    assert sum(c.n for c in fake_backend.log.calls) <= 2 * 3


def test_llm_prm_reads_p_yes_and_judges_each_prefix_once(fake_backend) -> None:
    asyncio.run(_test_llm_prm_reads_p_yes_and_judges_each_prefix_once(fake_backend))


async def _test_llm_prm_reads_p_yes_and_judges_each_prefix_once(fake_backend) -> None:
    probability = {"s1": 0.8, "s2": 0.4}

    def verdict(prompt: str):
        last = [p for p in probability if f"{p} ;" in prompt]
        p = probability[last[-1]]
        return {"Yes": math.log(p), "No": math.log(1 - p)}

    fake_backend.next_token = verdict
    ctx = context(fake_backend)
    steps = [Step(text="s1 ;"), Step(text="s2 ;")]
    spec = PRMSpec(name="llm", aggregate="min")
    assert await score_steps(ctx, spec, steps) == pytest.approx(0.4)
    assert len(fake_backend.log.calls) == 2  # one verdict per prefix
    assert await score_steps(ctx, PRMSpec(name="llm", aggregate="mean"), steps) == pytest.approx(0.6)
    assert len(fake_backend.log.calls) == 2  # both prefixes already judged on this node
    assert await score_steps(ctx, PRMSpec(name="llm", aggregate="last"), steps[:1]) == pytest.approx(0.8)
    assert fake_backend.log.calls[0].top_logprobs > 0


def test_self_certainty_is_the_geometric_mean_token_probability(fake_backend) -> None:
    asyncio.run(_test_self_certainty_is_the_geometric_mean_token_probability(fake_backend))


async def _test_self_certainty_is_the_geometric_mean_token_probability(fake_backend) -> None:
    ctx = context(fake_backend)
    steps = [Step(text="a", logprobs=(math.log(0.5), math.log(0.5))), Step(text="b", logprobs=(math.log(0.9),))]
    assert await score_steps(ctx, PRMSpec(name="self_certainty", aggregate="prod"), steps) == pytest.approx(0.45)
    assert await score_steps(ctx, PRMSpec(name="self_certainty", aggregate="min"), steps) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no token log-probabilities"):
        await score_steps(ctx, PRMSpec(name="self_certainty"), [Step(text="x")])
    assert not fake_backend.log.calls  # it never calls a model


def test_a_prm_needing_what_the_backend_lacks_fails_validation(fake_backend) -> None:
    class NoLogprobs(FakeBackend):
        capabilities = frozenset({"continuation"})

    from orchestra.backends import BACKENDS

    BACKENDS.add("fake_plain", NoLogprobs)
    with pytest.raises(Exception, match="logprobs"):
        Recipe.model_validate({
            "name": "x", "models": {"m": {"backend": "fake_plain"}},
            "nodes": [{"id": "search", "technique": "particle_filtering", "params": {"prm": {"name": "llm"}}}],
        })


def test_particle_gibbs_replays_its_reference_without_generating_it(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "Answer: 7" if depth_of(prompt) >= 2 else f"s{index} ; x"
    _, outputs = run(tmp_path, "particle_filtering", rollouts=4, gibbs_iterations=2)
    roots = [c.n for c in fake_backend.log.calls if depth_of(c.prompt) == 0]
    # the first sweep draws 4 first steps; the second only 3: slot 0 replays the reference
    assert roots == [4, 3]
    assert len(outputs) == 4 and all(o["answer"] == "7" for o in outputs)


def _events(tmp_path: Path, technique: str, **params) -> tuple[list[dict], list[dict]]:
    out = tmp_path / technique
    orchestra.run(recipe(technique, **params), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    record = traces(out)[("p0", "search")]
    return record.get("events", []), record["outputs"]


def _assert_a_consistent_tree(scored: list[dict], outputs: list[dict]) -> None:
    ids = [e["id"] for e in scored]
    assert len(ids) == len(set(ids))  # one record per distinct partial answer
    by_id = {e["id"]: e for e in scored}
    for event in scored:  # a parent is the partial answer one step shorter, scored before it
        if event["depth"] == 1:
            assert event["parent"] is None
        else:
            assert by_id[event["parent"]]["depth"] == event["depth"] - 1
            assert ids.index(event["parent"]) < ids.index(event["id"])
        assert 0 < event["score"] <= 1 and len(event["step"]) <= STEP_RECORDED
    for output in outputs:  # every answer is a scored node, and its steps are its ancestors'
        node, steps = by_id[partial_id(output["text"])], []
        while node is not None:
            steps.insert(0, node["step"])
            node = by_id.get(node["parent"])
        assert "".join(steps) == output["text"]


def test_particle_filtering_records_its_tree_and_resampling(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = scripted
    events, outputs = _events(tmp_path, "particle_filtering", rollouts=6, ess_threshold=1.0)
    scored = [e for e in events if e["kind"] == "scored"]
    _assert_a_consistent_tree(scored, outputs)
    assert sum(e["finished"] for e in scored) == len({o["text"] for o in outputs})
    resamples = [e for e in events if e["kind"] == "resample"]
    assert resamples and resamples[0]["depth"] == 1 and len(resamples[0]["kept"]) == 6
    depth_one = {e["id"] for e in scored if e["depth"] == 1 and not e["finished"]}
    assert set(resamples[0]["kept"]) <= depth_one  # finished particles are never resampled


def test_beam_search_records_what_it_prunes(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "Answer: 7" if depth_of(prompt) >= 2 else f"s{index} ; x"
    events, outputs = _events(tmp_path, "beam_search", rollouts=6, beam_width=3)
    scored = [e for e in events if e["kind"] == "scored"]
    _assert_a_consistent_tree(scored, outputs)
    prunes = [e for e in events if e["kind"] == "prune"]
    # rounds 1 and 2 keep N / M = 2 of 6 partial answers; round 3's all finish (nothing pruned)
    assert [(e["depth"], len(e["kept"]), len(e["dropped"])) for e in prunes] == [(1, 2, 4), (2, 2, 4)]
    parents = {e["parent"] for e in scored}
    assert set(prunes[0]["kept"]) <= parents and not set(prunes[0]["dropped"]) & parents


@pytest.mark.parametrize("technique", ["dvts", "mcts", "best_first"])
def test_tree_searches_record_scored_nodes(tmp_path: Path, fake_backend, technique: str) -> None:
    fake_backend.script = scripted
    extra = {"beam_width": 2} if technique == "dvts" else {}
    events, outputs = _events(tmp_path, technique, rollouts=4, **extra)
    _assert_a_consistent_tree([e for e in events if e["kind"] == "scored"], outputs)
    expected = "prune" if technique == "dvts" else "expand"
    assert any(e["kind"] == expected for e in events)


def test_a_step_is_recorded_cut_to_its_cap(tmp_path: Path, fake_backend) -> None:
    fake_backend.script = lambda request, prompt, index: "word " * 400 if depth_of(prompt) == 0 else "Answer: 7"
    events, _ = _events(tmp_path, "particle_filtering", rollouts=2, step_tokens=500)
    first = next(e for e in events if e["kind"] == "scored" and e["depth"] == 1)
    assert len(first["step"]) == STEP_RECORDED
