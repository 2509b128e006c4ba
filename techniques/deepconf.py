"""DeepConf (Fu et al., 2025, "Deep Think with Confidence"): vote only with the traces the model was sure of.

A token's confidence is minus the mean of the k largest log-probabilities at its
position (the request's `top_logprobs`): high where the model's distribution is
peaked, low where it hesitates. A trace is scored from its tokens' confidences:

- `mean`: over all its tokens;
- `lowest_group`: the lowest mean over any `window` consecutive tokens (its
  shakiest stretch; a trace shorter than the window is one group);
- `tail`: over its last `window` tokens (where the answer is written);
- `bottom_share`: the mean of its lowest 10% of group confidences.

Offline, n traces are drawn whole, the most confident share `keep` of them (by
`score`) is kept, and they vote weighted by that score. Online, `warmup` traces
are drawn whole and set a threshold: the (1 - keep) quantile of their lowest
group confidences (keep 0.9 keeps traces above the warm-up's 10th percentile).
Further traces are drawn in rounds of `batch`, each stopped as soon as a window
of its tokens falls below the threshold; stopped traces do not vote (their
tokens still count). Sampling ends once the leading answer holds `consensus` of
the confidence-weighted vote, or after n traces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from orchestra.backends import CONFIDENCE_STOP, LOGPROBS, ConfidenceStop, GenerationRequest
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.sample import SamplingSettings
from orchestra.techniques._voting import tally

TraceScore = Literal["lowest_group", "mean", "tail", "bottom_share"]
#: `bottom_share` averages this share of a trace's lowest group confidences (the paper's bottom 10%).
BOTTOM_SHARE = 0.1


class DeepConfParams(SamplingSettings):
    mode: Literal["offline", "online"] = Field(
        default="online",
        description="offline: draw n traces, keep the most confident share, weighted vote; online: warm-up "
        "traces set a threshold, later traces stop early below it, sampling stops at consensus.",
    )
    n: int = Field(default=16, ge=1, le=4096, description="Traces drawn (online: at most).")
    warmup: int = Field(default=4, ge=1, description="Online: traces drawn whole to set the stop threshold.")
    keep: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Share of traces kept: offline the most confident share by `score`; online the threshold "
        "is the (1 - keep) quantile of the warm-up traces' lowest group confidence.",
    )
    score: TraceScore = Field(
        default="lowest_group",
        description="Trace score that filters (offline) and weights the votes (both modes).",
    )
    window: int = Field(default=16, ge=1, description="Tokens per group (the sliding window), and the tail's length.")
    top_logprobs: int = Field(
        default=5, ge=1, le=20, description="k: a token's confidence is minus the mean of its top-k log-probabilities."
    )
    consensus: float = Field(
        default=0.95, gt=0.0, le=1.0,
        description="Online: stop once the leading answer holds this share of the confidence-weighted vote.",
    )
    batch: int = Field(default=4, ge=1, description="Online: traces drawn per round after the warm-up.")

    @model_validator(mode="after")
    def _warmup_within_n(self) -> DeepConfParams:
        if self.mode == "online" and self.warmup > self.n:
            raise ValueError(f"warmup ({self.warmup}) exceeds n ({self.n})")
        return self


# ----- the confidence math ---------------------------------------------------------------------


def token_confidences(top_logprobs: Sequence[Mapping[str, float]]) -> list[float]:
    """Per generated position, minus the mean of its most likely tokens' log-probabilities.

    Backends merge tokens that decode to the same text, so a position may list fewer
    than k; the mean is over those listed (as the paper's implementation does)."""
    return [-sum(top.values()) / len(top) if top else 0.0 for top in top_logprobs]


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """The mean confidence of every `window` consecutive tokens; a shorter trace is one group."""
    if len(confidences) <= window:
        return [float(np.mean(confidences))] if confidences else [0.0]
    return np.lib.stride_tricks.sliding_window_view(np.asarray(confidences), window).mean(axis=1).tolist()


def trace_score(confidences: Sequence[float], score: TraceScore, window: int) -> float:
    """One number for how sure the model was of a whole trace (higher: surer)."""
    if not confidences:
        return 0.0
    if score == "mean":
        return float(np.mean(confidences))
    if score == "tail":
        return float(np.mean(confidences[-window:]))
    groups = group_confidences(confidences, window)
    if score == "lowest_group":
        return min(groups)
    lowest = max(1, int(len(groups) * BOTTOM_SHARE))
    return float(np.mean(sorted(groups)[:lowest]))


def stops_early(confidences: Sequence[float], window: int, threshold: float) -> bool:
    """Whether an engine honouring `ConfidenceStop(threshold, window)` would have stopped this
    trace: some full window of its tokens has a mean confidence below the threshold."""
    return len(confidences) >= window and min(group_confidences(confidences, window)) < threshold


def keep_threshold(scores: Sequence[float], keep: float) -> float:
    """The score a trace needs to be among the most confident share `keep`: the (1 - keep)
    quantile of `scores` (interpolated linearly, as numpy's percentile)."""
    return float(np.quantile(scores, 1.0 - keep))


# ----- the technique ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trace:
    candidate: Candidate  # scores["confidence"]: the trace's score
    confidences: tuple[float, ...]


@technique("deepconf", DeepConfParams, requires=(LOGPROBS,), min_inputs=0)
async def deepconf(ctx: Context, inputs: list[Candidate], params: DeepConfParams) -> list[Candidate]:
    """Confidence-filtered voting: keep the traces the model was sure of, stop the others early (DeepConf).

    Output as `majority_vote` over the kept traces, weighted by their confidence
    (`scores["confidence"]`: the representative trace's score), with how many
    traces were drawn (`traces`), voted (`kept`: an answer, above the threshold)
    and fell below the threshold online (`stopped`: those the engine stopped, and
    warm-up traces it would have), and the confidence a trace needed (`threshold`).
    Online, a backend with the CONFIDENCE_STOP capability (the local engine) ends
    low-confidence traces mid-decode, which is where the tokens are saved; other
    backends generate them whole and the technique drops them after the fact (the
    same traces are dropped and the vote is the same, but no tokens are saved).
    Sample indices continue across rounds, so a trace of index i is the one any
    request with this seed and these settings draws as sample i, and a stopped
    trace is a prefix of it.
    """
    if params.mode == "offline":
        traces = await _draw(ctx, params, first=0, count=params.n)
        answered = [t for t in traces if t.candidate.answer is not None]
        threshold = keep_threshold([_score(t) for t in answered], params.keep) if answered else 0.0
        voters = [t for t in answered if _score(t) >= threshold]
        return _vote(ctx, voters, traces=len(traces), stopped=0, threshold=threshold)

    traces = await _draw(ctx, params, first=0, count=params.warmup)
    lowest = [trace_score(t.confidences, "lowest_group", params.window) for t in traces]
    threshold = keep_threshold(lowest, params.keep)
    engine_stops = CONFIDENCE_STOP in ctx.model().backend.capabilities
    stop = ConfidenceStop(threshold=threshold, window=params.window, top_k=params.top_logprobs)
    while True:
        passed = [t for t in traces if not _stopped(t, params, threshold)]
        votes = tally(ctx, [t.candidate for t in passed], weight_by="confidence")
        if len(traces) >= params.n or (votes and votes[0].scores["votes"] >= params.consensus):
            break
        count = min(params.batch, params.n - len(traces))
        traces += await _draw(ctx, params, first=len(traces), count=count, stop=stop if engine_stops else None)
    voters = [t for t in passed if t.candidate.answer is not None]
    return _vote(ctx, voters, traces=len(traces), stopped=len(traces) - len(passed), threshold=threshold)


def _score(trace: _Trace) -> float:
    return trace.candidate.scores["confidence"]


def _stopped(trace: _Trace, params: DeepConfParams, threshold: float) -> bool:
    """Stopped by the engine, or one it would have stopped (a warm-up trace; any trace of a
    backend that cannot stop early)."""
    return trace.candidate.finish_reason == "confidence" or stops_early(trace.confidences, params.window, threshold)


def _vote(ctx: Context, voters: list[_Trace], *, traces: int, stopped: int, threshold: float) -> list[Candidate]:
    counts = {"traces": float(traces), "kept": float(len(voters)), "stopped": float(stopped), "threshold": threshold}
    return [
        c.model_copy(update={"scores": {**c.scores, **counts}})
        for c in tally(ctx, [t.candidate for t in voters], weight_by="confidence")
    ]


async def _draw(
    ctx: Context, params: DeepConfParams, *, first: int, count: int, stop: ConfidenceStop | None = None
) -> list[_Trace]:
    """Traces first..first+count-1 with their token confidences, each scored by `params.score`."""
    handle = ctx.model()
    request = GenerationRequest(
        messages=ctx.problem.messages,
        n=count,
        first_index=first,
        seed=ctx.seed,
        **params.sampling(),
        top_logprobs=params.top_logprobs,
        confidence_stop=stop,
    )
    result = await handle.generate(request)
    traces = []
    for completion in result.completions:
        if completion.top_logprobs is None:
            raise RuntimeError(
                f"deepconf reads token confidences from top_logprobs, and model {handle.alias!r} returned none"
            )
        confidences = tuple(token_confidences(completion.top_logprobs))
        candidate = ctx.candidate(completion, handle.alias, result.prompt_tokens)
        score = trace_score(confidences, params.score, params.window)
        traces.append(_Trace(candidate.with_score("confidence", score), confidences))
    return traces
