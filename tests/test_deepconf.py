"""DeepConf without a model: the confidence math, the request field and its cache key, the
engine's stop rule, and the technique's control flow on the scripted backend (offline
filtering, online warm-up threshold, early stops with and without an engine that stops,
consensus, replay from the generation cache)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fake_backend import fake_backend, write_sums  # noqa: F401  (fixture)

import fake_backend as scripted
import orchestra
from orchestra.backends import CONFIDENCE_STOP, ConfidenceStop, GenerationRequest
from orchestra.backends.local_engine import stopping
from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.scheduler import Sampled
from orchestra.backends.local_engine.sequence import Sequence
from orchestra.problem import Message
from orchestra.recipe import Recipe
from orchestra.techniques.deepconf import (
    group_confidences,
    keep_threshold,
    stops_early,
    token_confidences,
    trace_score,
)
from test_engine import traces
from test_scheduler import EOS, scheduler

# ----- the math ---------------------------------------------------------------------------------


def test_token_confidence_is_minus_the_mean_top_logprob() -> None:
    peaked = {"a": -0.01, "b": -5.0, "c": -6.0}
    flat = {"a": -1.0, "b": -1.1, "c": -1.2}
    assert token_confidences([peaked, flat, {}]) == pytest.approx([11.01 / 3, 1.1, 0.0])
    assert token_confidences([peaked])[0] > token_confidences([flat])[0]  # peaked: confident


def test_group_confidences_slide_by_one_and_a_short_trace_is_one_group() -> None:
    assert group_confidences([1, 2, 3, 4, 6], 2) == pytest.approx([1.5, 2.5, 3.5, 5.0])
    assert group_confidences([1, 2, 6], 4) == pytest.approx([3.0])
    assert group_confidences([], 4) == [0.0]


def test_trace_scores() -> None:
    confidences = [5.0] * 10 + [1.0, 1.0] + [5.0] * 8  # one shaky stretch of two tokens
    assert trace_score(confidences, "mean", 4) == pytest.approx(92 / 20)
    assert trace_score(confidences, "tail", 4) == 5.0
    assert trace_score(confidences, "lowest_group", 4) == 3.0  # a window holding both shaky tokens
    groups = sorted(group_confidences(confidences, 4))  # 17 windows: the lowest 10% is one of them
    assert trace_score(confidences, "bottom_share", 4) == pytest.approx(groups[0])
    assert trace_score([4.0] * 40 + [0.0], "bottom_share", 1) == pytest.approx((0 + 4 + 4 + 4) / 4)
    assert trace_score([], "mean", 4) == 0.0


def test_early_stop_needs_a_full_window_below_the_threshold() -> None:
    assert stops_early([5, 5, 1, 1, 5], 2, 2.0)
    assert not stops_early([5, 5, 1, 5, 5], 2, 2.0)  # every pair's mean is 3
    assert not stops_early([1, 1], 3, 2.0)  # never a full window: an engine never stops it


def test_keep_threshold_is_the_complementary_quantile() -> None:
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert keep_threshold(scores, 1.0) == 1.0  # keep everything
    assert keep_threshold(scores, 0.5) == 3.0
    assert keep_threshold(scores, 0.25) == 4.0
    assert sum(s >= keep_threshold(scores, 0.1) for s in scores) == 1


# ----- the request field ------------------------------------------------------------------------


def test_the_confidence_stop_is_part_of_the_cache_key_only_when_set() -> None:
    plain = GenerationRequest(messages=(Message(role="user", content="hi"),), seed=1, top_logprobs=5)
    assert "confidence_stop" not in plain.sampling_key()
    stopping_request = plain.model_copy(update={"confidence_stop": ConfidenceStop(threshold=1.5, window=8)})
    key = stopping_request.sampling_key()
    assert key["confidence_stop"] == {"threshold": 1.5, "window": 8, "top_k": 5}
    assert {k: v for k, v in key.items() if k != "confidence_stop"} == plain.sampling_key()
    with pytest.raises(ValueError):
        ConfidenceStop(threshold=1.0, top_k=21)


# ----- the engine's stop rule -------------------------------------------------------------------


class _Tokenizer:
    def decode(self, tokens, skip_special_tokens=True):
        return " ".join(str(t) for t in tokens)


def test_stop_checker_stops_on_a_low_window_only_when_nothing_else_ends_the_sequence() -> None:
    checker = stopping.StopChecker(_Tokenizer(), {EOS})
    rule = stopping.ConfidenceStop(threshold=2.0, window=3, top_k=5)
    assert checker.check([7, 8], (), 10, rule, [1.0, 1.0]) is None  # the window is not full yet
    assert checker.check([7, 8, 9], (), 10, rule, [3.0, 3.0, 1.0]) is None  # mean 2.33
    finish = checker.check([7, 8, 9], (), 10, rule, [3.0, 1.0, 1.0])
    assert finish == stopping.Finish("confidence", "7 8 9")
    assert checker.check([7, 8, EOS], (), 10, rule, [3.0, 1.0, 1.0]).reason == "stop"  # ended on its own
    assert checker.check([7, 8, 9], (), 3, rule, [3.0, 1.0, 1.0]).reason == "length"
    assert checker.check([7, 8, 9], (), 10, None, [3.0, 1.0, 1.0]) is None  # it did not ask


def test_the_scheduler_records_confidences_and_finishes_the_sequence() -> None:
    s = scheduler()
    rule = stopping.ConfidenceStop(threshold=2.0, window=2, top_k=5)
    asked = Sequence(prompt_ids=(1, 2), params=SamplingParams(max_tokens=8, confidence_stop=rule),
                     stream=random.Random(0), limit=8)
    other = Sequence(prompt_ids=(1, 2), params=SamplingParams(max_tokens=8), stream=random.Random(0), limit=8)
    s.add([asked, other])
    finished = []
    for confidence in (3.0, 1.5, 1.0):  # windows: (3, 1.5) mean 2.25, (1.5, 1) mean 1.25: stop
        plan = s.schedule()
        everyone = [*plan.decode, *(q for p in plan.prefills for q in p.sequences)]
        output = {q: Sampled([7], [0.0], confidence=confidence if q is asked else None) for q in everyone}
        finished += s.update_from_output(plan, output)
    assert [(q, f.reason) for q, f in finished] == [(asked, "confidence")]
    assert asked.confidences == [3.0, 1.5, 1.0] and asked.tokens == [7, 7, 7]
    assert other.confidences == [] and other in s.running


# ----- the technique on the scripted backend ----------------------------------------------------

#: Sample indices whose traces have a shaky stretch (positions 2-4 at confidence 0.1, else 1.0).
SHAKY = {2, 7}


def shaky_confidence(prompt: str, index: int, position: int) -> float:
    return 0.1 if index in SHAKY and 2 <= position <= 4 else 1.0


def deepconf_recipe(**params) -> Recipe:
    return Recipe.model_validate({
        "name": "deepconf", "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "vote", "technique": "deepconf", "params": {"window": 3, "temperature": 0.7, **params}}],
    })


def run_deepconf(tmp_path: Path, name: str = "run", cache=False, **params):
    out = tmp_path / name
    result = orchestra.run(deepconf_recipe(**params), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=cache)
    assert result.results[0].status == "ok", result.results[0].error
    return result.results[0], traces(out)[("p0", "vote")]["outputs"]


def test_offline_keeps_the_most_confident_share_and_weights_the_vote(tmp_path: Path, fake_backend, monkeypatch) -> None:
    # p0 is "Compute 2 + 1 =": the wrong 4 (c+1) is the plain majority, but its traces are unsure
    monkeypatch.setattr(scripted, "OFFSETS", (1, 1, 0, 1, 0, 2, 1, 3))
    fake_backend.token_confidence = lambda prompt, index, position: 2.0 if scripted.OFFSETS[index % 8] == 0 else 0.5
    result, outputs = run_deepconf(tmp_path, mode="offline", n=8, keep=0.25)
    assert [c["answer"] for c in outputs] == ["3"] and result.correct
    assert {k: outputs[0]["scores"][k] for k in ("traces", "kept", "stopped")} == {"traces": 8, "kept": 2, "stopped": 0}
    # the 0.75 quantile of six 0.5s and two 2.0s
    assert outputs[0]["scores"]["confidence"] == 2.0 and outputs[0]["scores"]["threshold"] == pytest.approx(0.875)
    call = fake_backend.log.calls[0]
    assert (call.first_index, call.n, call.top_logprobs, call.confidence_stop) == (0, 8, 5, None)

    _, outputs = run_deepconf(tmp_path, "all", mode="offline", n=8, keep=1.0)  # no filter: the weights decide
    assert [c["answer"] for c in outputs] == ["3", "4", "5", "6"]
    assert outputs[0]["scores"]["votes"] == pytest.approx(4.0 / (4.0 + 2.0 + 0.5 + 0.5))
    assert outputs[0]["scores"]["kept"] == 8


def test_online_warmup_sets_the_threshold_and_the_engine_stops_shaky_traces(
    tmp_path: Path, fake_backend, monkeypatch
) -> None:
    fake_backend.token_confidence = shaky_confidence
    # offsets 1, 0, 2, 0, 0, 3, 0, 1: the leader never reaches 95%, so all 8 traces are drawn
    monkeypatch.setattr(fake_backend, "capabilities", fake_backend.capabilities | {CONFIDENCE_STOP})
    stopped, outputs = run_deepconf(tmp_path, "engine", n=8, warmup=4, batch=2, keep=0.75)
    engine_calls = list(fake_backend.log.calls)
    # warm-up lowest groups: 1, 1, 0.1, 1 -> the 0.25 quantile is 0.775
    threshold = 0.1 + 0.75 * 0.9
    assert [(c.first_index, c.n) for c in engine_calls] == [(0, 4), (4, 2), (6, 2)]
    assert engine_calls[0].confidence_stop is None
    for call in engine_calls[1:]:
        assert call.confidence_stop.threshold == pytest.approx(threshold)
        assert (call.confidence_stop.window, call.confidence_stop.top_k) == (3, 5)
    scores = outputs[0]["scores"]
    assert outputs[0]["answer"] == "3" and scores["threshold"] == pytest.approx(threshold)
    assert {k: scores[k] for k in ("traces", "kept", "stopped")} == {"traces": 8, "kept": 6, "stopped": 2}

    monkeypatch.setattr(fake_backend, "capabilities", fake_backend.capabilities - {CONFIDENCE_STOP})
    fake_backend.log.calls.clear()
    whole, plain_outputs = run_deepconf(tmp_path, "after-the-fact", n=8, warmup=4, batch=2, keep=0.75)
    assert all(c.confidence_stop is None for c in fake_backend.log.calls)
    assert plain_outputs[0]["scores"] == outputs[0]["scores"]  # the same traces dropped, the same vote
    # only an engine that stops saves tokens: trace 7 ends after 3 of its 12 tokens
    assert whole.usage.completion_tokens - stopped.usage.completion_tokens == 12 - 3


def test_online_stops_sampling_at_consensus(tmp_path: Path, fake_backend, monkeypatch) -> None:
    monkeypatch.setattr(scripted, "OFFSETS", (0,) * 8)
    fake_backend.token_confidence = lambda prompt, index, position: 1.0
    _, outputs = run_deepconf(tmp_path, n=16, warmup=4, batch=4)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls] == [(0, 4)]
    assert outputs[0]["scores"]["traces"] == 4 and outputs[0]["scores"]["votes"] == 1.0


def test_replayed_traces_still_carry_their_confidences(tmp_path: Path, fake_backend, monkeypatch) -> None:
    fake_backend.token_confidence = shaky_confidence
    monkeypatch.setattr(fake_backend, "capabilities", fake_backend.capabilities | {CONFIDENCE_STOP})
    cache = tmp_path / "cache.sqlite"
    first, outputs = run_deepconf(tmp_path, "first", cache=cache, n=8, warmup=4, batch=2, keep=0.75)
    calls = len(fake_backend.log.calls)
    again, replayed = run_deepconf(tmp_path, "again", cache=cache, n=8, warmup=4, batch=2, keep=0.75)
    assert len(fake_backend.log.calls) == calls  # nothing generated
    assert again.usage.cache_hits == 8 and again.usage.completion_tokens == first.usage.completion_tokens
    assert [(c["answer"], c["scores"]) for c in replayed] == [(c["answer"], c["scores"]) for c in outputs]


def test_warmup_beyond_n_is_refused(fake_backend) -> None:
    with pytest.raises(Exception, match="warmup"):
        deepconf_recipe(n=4, warmup=8)
    deepconf_recipe(mode="offline", n=4, warmup=8)  # offline draws no warm-up
