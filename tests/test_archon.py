"""Control flow of the LLM components (critic, rank, fuse, verify, llm_judge, refine, pdr)
with the scripted fake backend: which calls they make, how replies become candidates,
scores and critiques. No model; fast."""

from __future__ import annotations

import asyncio
import math
import random
import re
from pathlib import Path

import pytest
from fake_backend import FakeBackend, fake_backend, write_sums  # noqa: F401  (fake_backend is a fixture)

import orchestra
from orchestra.backends import GenerationRequest
from orchestra.budget import Limits, Meter
from orchestra.candidate import Candidate
from orchestra.context import Context, Ledger, ModelHandle
from orchestra.problem import Problem
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe
from orchestra.scorer import get_scorer
from orchestra.techniques.critic import CriticParams, critic
from orchestra.techniques.fuse import FuseParams, fuse
from orchestra.techniques.pdr import PDRParams, pdr
from orchestra.techniques.rank import RankParams, rank
from orchestra.techniques.refine import RefineParams, refine
from orchestra.techniques.verify import VerifyParams, verify

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = Problem.from_prompt("p0", "Compute 3 + 4 = ?")


def context(problem: Problem = PROBLEM, node: str = "node") -> Context:
    backend = FakeBackend(ModelSpec(backend="fake", model="fake-model"))
    handle = ModelHandle("m", backend, Ledger([Meter("per-problem", Limits())]), node, None)
    return Context(problem=problem, node=node, task=None, models={"m": handle}, default_model="m",
                   seed=11, rng=random.Random(11))


def run(coroutine):
    return asyncio.run(coroutine)


def pool(*answers: int) -> list[Candidate]:
    return [Candidate(text=f"I think. Answer: {a}", answer=str(a), node="gen") for a in answers]


def calls() -> list:
    return FakeBackend.log.calls


def proposed(prompt: str) -> str | None:
    """The answer of the solution quoted in a critic/verifier/judge prompt."""
    match = re.search(r"Proposed solution:\n.*?Answer: (-?\d+)", prompt, re.DOTALL)
    return match.group(1) if match else None


def verdicts(yes_if_correct: float = 0.9) -> None:
    """Script the verdict token: P(Yes) = yes_if_correct for a quoted answer of 7, 1 - that otherwise."""

    def next_token(prompt: str):
        if not prompt.rstrip().endswith("Verdict:"):
            return None
        p = yes_if_correct if proposed(prompt) == "7" else 1 - yes_if_correct
        return {" Yes": math.log(p), " No": math.log(1 - p)}

    FakeBackend.next_token = next_token


# --- critic ---------------------------------------------------------------------------------


def test_critic_attaches_each_critique_to_its_own_candidate_by_id(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: (
        f"Strengths: clear. Weaknesses: {proposed(prompt)} is not 3 + 4." if proposed(prompt) != "9" else ""
    )
    inputs = pool(8, 7, 9)
    out = run(critic(context(), inputs, CriticParams(max_tokens=40)))
    assert [c.id for c in out] == [c.id for c in inputs] and [c.text for c in out] == [c.text for c in inputs]
    assert out[0].critiques == {inputs[0].id: "Strengths: clear.\nWeaknesses: 8 is not 3 + 4."}
    assert out[1].critiques == {inputs[1].id: "Strengths: clear.\nWeaknesses: 7 is not 3 + 4."}
    assert out[2].critiques == {}  # an empty reply attaches nothing
    assert len(calls()) == 3 and all(c.max_tokens == 40 for c in calls())


# --- rank -----------------------------------------------------------------------------------


def test_rank_orders_by_the_parsed_ranking_and_keeps_top_k(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "[3] > [1]"
    inputs = pool(5, 6, 7)
    out = run(rank(context(), inputs, RankParams(top_k=2)))
    assert [c.id for c in out] == [inputs[2].id, inputs[0].id]
    assert [c.scores["rank"] for c in out] == [1.0, 0.5]
    assert all(c.scores["rank_fallback"] == 0.0 for c in out)
    (call,) = calls()
    assert "[1] I think. Answer: 5" in call.prompt and "[3] I think. Answer: 7" in call.prompt


def test_rank_falls_back_to_input_order_and_says_so(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "They are all very good answers."
    inputs = pool(5, 6, 7)
    out = run(rank(context(), inputs, RankParams(top_k=3)))
    assert [c.id for c in out] == [c.id for c in inputs]
    assert all(c.scores["rank_fallback"] == 1.0 for c in out)


def test_rank_fallback_can_order_by_an_existing_score(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: ""
    inputs = [c.with_score("votes", v) for c, v in zip(pool(5, 6, 7), (0.2, 0.5, 0.3))]
    out = run(rank(context(), inputs, RankParams(top_k=2, fallback_score="votes")))
    assert [c.answer for c in out] == ["6", "7"] and out[0].scores["rank_fallback"] == 1.0


def test_rank_shows_critiques_and_skips_the_call_for_one_candidate(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "[2] > [1]"
    a, b = pool(5, 7)
    b = b.model_copy(update={"critiques": {b.id: "Strengths: right sum"}})
    run(rank(context(), [a, b], RankParams()))
    assert "Critique of [2]: Strengths: right sum" in calls()[0].prompt
    assert run(rank(context(), [a], RankParams())) == [a.with_score("rank", 1.0).with_score("rank_fallback", 0.0)]
    assert len(calls()) == 1


# --- fuse -----------------------------------------------------------------------------------


def test_fuse_writes_n_new_candidates_from_all_inputs_and_critiques(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: f"Merged attempt {i}. Answer: {7 + i}"
    a, b = pool(5, 7)
    a = a.model_copy(update={"critiques": {a.id: "Weaknesses: 5 is wrong"}})
    out = run(fuse(context(node="fuse"), [a, b], FuseParams(n=2, temperature=0.7, max_tokens=30)))
    assert [c.answer for c in out] == ["7", "8"]
    assert all(c.parents == (a.id, b.id) and c.node == "fuse" and c.id not in (a.id, b.id) for c in out)
    (call,) = calls()
    assert call.n == 2 and call.max_tokens == 30
    assert "Critique of [1]: Weaknesses: 5 is wrong" in call.prompt and "[2] I think. Answer: 7" in call.prompt
    assert call.prompt.rstrip().endswith("fix their mistakes.")  # the problem, then the instruction, come last
    assert run(fuse(context(), [], FuseParams())) == [] and len(calls()) == 1


# --- verify and llm_judge -------------------------------------------------------------------


def test_verify_reasons_then_reads_the_verdict_token_probability(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "Check: 3 + 4 = 7. Verdict: Yes, definitely."
    verdicts(0.8)
    inputs = pool(7, 8)
    out = run(verify(context(), inputs, VerifyParams(max_tokens=50)))
    assert [c.id for c in out] == [c.id for c in inputs]
    assert out[0].scores["verify"] == pytest.approx(0.8) and out[1].scores["verify"] == pytest.approx(0.2)
    reasoning = [c for c in calls() if c.top_logprobs == 0]
    verdict_calls = [c for c in calls() if c.top_logprobs > 0]
    assert len(reasoning) == 2 and all(c.stop == ("Verdict:",) and c.max_tokens == 50 for c in reasoning)
    assert len(verdict_calls) == 2 and all(c.max_tokens == 1 and c.temperature == 0.0 for c in verdict_calls)
    # the reasoning was cut at the stop string, and the verdict continues the same reply
    assert all(c.prompt.endswith("assistant: Check: 3 + 4 = 7.\nVerdict:") for c in verdict_calls)


def test_verify_scores_a_reply_that_never_writes_a_verdict(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "I am not sure what to say here"
    verdicts(0.9)
    (out,) = run(verify(context(), pool(7), VerifyParams(max_tokens=4)))
    assert out.scores["verify"] == pytest.approx(0.9)
    assert calls()[-1].prompt.endswith("assistant: I am not sure\nVerdict:")  # cut at max_tokens, cue added


def test_verify_is_undecided_when_neither_yes_nor_no_is_likely(fake_backend) -> None:
    FakeBackend.next_token = lambda prompt: {" The": -0.1, " Maybe": -2.5} if prompt.endswith("Verdict:") else None
    (out,) = run(verify(context(), pool(7), VerifyParams()))
    assert out.scores["verify"] == 0.5


def test_verify_averages_several_checks(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: f"check number {i}"
    FakeBackend.next_token = lambda prompt: (
        {" Yes": math.log(0.9 if "number 0" in prompt else 0.3), " No": math.log(0.1 if "number 0" in prompt else 0.7)}
        if prompt.endswith("Verdict:") else None
    )
    (out,) = run(verify(context(), pool(7), VerifyParams(checks=3, temperature=0.8)))
    assert out.scores["verify"] == pytest.approx((0.9 + 0.3 + 0.3) / 3)
    with pytest.raises(ValueError, match="temperature > 0"):
        VerifyParams(checks=2)


def test_llm_judge_is_one_verdict_token_after_a_direct_question(fake_backend) -> None:
    verdicts(0.7)
    judge = get_scorer("llm_judge")
    assert judge.requires == {"logprobs", "continuation"}
    good, bad = pool(7, 8)
    assert run(judge.fn(context(), good)) == pytest.approx(0.7)
    assert run(judge.fn(context(), bad)) == pytest.approx(0.3)
    assert all(c.max_tokens == 1 and c.top_logprobs == 20 for c in calls()) and len(calls()) == 2
    assert calls()[0].prompt.endswith("Answer Yes or No.\nassistant: Verdict:")


# --- refine ---------------------------------------------------------------------------------


def test_refine_stops_when_the_feedback_says_correct(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: (
        "All steps check out. Verdict: Yes" if "Give feedback" in prompt else None
    )
    (start,) = pool(7)
    (out,) = run(refine(context(), [start], RefineParams(rounds=3)))
    assert out.id == start.id and out.scores["refine_rounds"] == 0
    assert out.critiques == {start.id: "All steps check out. Verdict: Yes"}
    assert len(calls()) == 1


def test_refine_rewrites_for_each_round_until_the_limit(fake_backend) -> None:
    def script(request, prompt, i):
        if "Give feedback" in prompt:
            return f"Wrong sum for {proposed(prompt)}. Verdict: No"
        previous = re.search(r"Previous solution:.*?Answer: (-?\d+)", prompt, re.DOTALL).group(1)
        return f"Fixed it. Answer: {int(previous) - 1}"

    FakeBackend.script = script
    (start,) = pool(9)
    (out,) = run(refine(context(node="refine"), [start], RefineParams(rounds=2, max_tokens=20)))
    assert out.answer == "7" and out.scores["refine_rounds"] == 2 and out.node == "refine"
    assert [c.prompt.count("Give feedback") for c in calls()] == [1, 0, 1, 0]  # feedback, rewrite, feedback, rewrite
    middle_id = out.parents[0]
    assert middle_id != start.id
    assert out.critiques == {middle_id: "Wrong sum for 8. Verdict: No"}  # keyed by the answer it criticises


def test_refine_without_inputs_starts_from_a_fresh_answer_and_keeps_going_without_a_verdict(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "Looks fine to me." if "Give feedback" in prompt else None
    (out,) = run(refine(context(), [], RefineParams(rounds=1)))
    assert out.scores["refine_rounds"] == 1  # no written verdict: the answer was rewritten
    assert len(calls()) == 3 and calls()[0].prompt == "user: Compute 3 + 4 = ?"


# --- pdr ------------------------------------------------------------------------------------


def test_pdr_drafts_distills_and_refines_in_rounds(fake_backend) -> None:
    def script(request, prompt, i):
        if "Summarize the drafts" in prompt:
            return "" if "(seed=11/" in prompt else "Most drafts say 7."  # round 1's drafts: seed 11
        return None  # drafts and final answers: the default (sums with offsets)

    FakeBackend.script = script
    out = run(pdr(context(node="pdr"), [], PDRParams(rounds=2, drafts=3, n=2, temperature=0.5)))
    kinds = ["distill" if "Summarize the drafts" in c.prompt else "notes" if "Notes from" in c.prompt else "plain"
             for c in calls()]
    assert kinds == ["plain", "distill", "notes", "distill", "notes"]
    assert [c.n for c in calls()] == [3, 1, 3, 1, 2]
    # round 1's summary came back empty: round 2 drafted from the tally of its answers
    assert "Final answers of the drafts: 8 (1x), 7 (1x), 9 (1x)." in calls()[2].prompt
    assert "Most drafts say 7." in calls()[4].prompt
    assert len(out) == 2 and all(c.node == "pdr" and len(c.parents) == 3 for c in out)


def test_pdr_uses_its_inputs_as_the_first_round_of_drafts(fake_backend) -> None:
    FakeBackend.script = lambda request, prompt, i: "Two say 7." if "Summarize" in prompt else None
    inputs = pool(7, 7, 5)
    (out,) = run(pdr(context(), inputs, PDRParams(rounds=1)))
    assert out.parents == tuple(c.id for c in inputs)
    assert [("Summarize" in c.prompt, c.n) for c in calls()] == [(True, 1), (False, 1)]
    assert "[3] I think. Answer: 5" in calls()[0].prompt


# --- recipes --------------------------------------------------------------------------------


def on_fake(path: Path) -> Recipe:
    recipe = orchestra.load_recipe(path)
    return recipe.model_copy(update={"models": {"small": ModelSpec(backend="fake", model="fake-model")}})


@pytest.mark.parametrize("name", ["archon", "math_verify", "refine", "pdr", "llm_judge"])
def test_recipes_run_end_to_end_on_the_fake_backend(name: str, tmp_path: Path, fake_backend) -> None:
    verdicts(0.9)
    result = orchestra.run(on_fake(ROOT / f"recipes/{name}.yaml"), write_sums(tmp_path / "s.jsonl", 2), cache=False)
    assert [r.status for r in result.results] == ["ok", "ok"], [r.error for r in result.results]
    assert all(r.answer is not None for r in result.results)


def test_weighted_vote_reuses_the_verifier_scores(tmp_path: Path, fake_backend) -> None:
    """math_verify: the vote weighs by `verify` without verifying again, and the verifier
    (P(Yes) = 0.9 for the right sum, 0.1 otherwise) turns the vote to the right answer."""
    verdicts(0.9)
    FakeBackend.script = lambda request, prompt, i: (  # 5 wrong samples (8) and 3 right (7)
        f"Answer: {7 if i in (0, 3, 6) else 8}" if prompt.startswith("user: Compute") else None
    )
    result = orchestra.run(on_fake(ROOT / "recipes/math_verify.yaml"), "jsonl:" + str(_one_sum(tmp_path)), cache=False)
    (r,) = result.results
    assert r.answer == "7" and r.score == 1.0
    verdict_calls = [c for c in calls() if c.top_logprobs]
    assert len(verdict_calls) == 8  # one per sample, none again in the vote


def _one_sum(tmp_path: Path) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text('{"id": "q", "prompt": "Compute 3 + 4 =", "answer": 7, "split": "test"}\n')
    return path


def test_verdict_requests_are_plain_generation_requests() -> None:
    request = GenerationRequest(prompt="x", max_tokens=1, top_logprobs=20)
    assert request.sampling_key()["top_logprobs"] == 20
    assert "top_logprobs" not in GenerationRequest(prompt="x").sampling_key()  # old cache keys unchanged
    with pytest.raises(ValueError):
        GenerationRequest(prompt="x", top_logprobs=21)
