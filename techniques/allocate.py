"""Compute where it is needed: a cheap difficulty signal from the first samples sets how many a problem gets.

Snell et al. (2024) show that the best use of a fixed test-time budget depends on
how hard the problem is: easy problems are solved by a few samples, hard ones pay
back more, and hopeless ones waste whatever they get. `allocate` estimates the
difficulty from a small probe (how strongly the first samples agree, or how high a
scorer such as a trained verifier rates the best of them), then draws the number of
samples, and picks the selection method, of the tier that signal falls in —
optillm's and ThinkBooster's adaptive routers make the same move.

A technique sees one problem at a time, so a mean budget over a task is not
enforced while running: it is met by choosing the tiers on a dev run.
`calibrate_tiers` picks the threshold that spends a target mean number of samples
on the probe signals a dev run recorded; `expected_samples` says what any tiers
would spend on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique
from orchestra.techniques.sample import SamplingSettings
from orchestra.techniques._voting import tally

#: How the drawn samples become the output: `vote` as majority_vote, `best_of` as
#: best_of_n (the one best by `scorer`), `weighted` as weighted_best_of_n, `pool`
#: passes every sample on for a downstream selector.
Select = Literal["vote", "best_of", "weighted", "pool"]


class Tier(BaseModel):
    """Problems whose signal is at least `at_least` get `samples` in all (the last tier takes the rest)."""

    model_config = ConfigDict(extra="forbid")

    at_least: float | None = Field(default=None, description="Signal threshold; none on the last tier, which takes every signal below the others.")
    samples: int = Field(ge=1, le=4096, description="Samples drawn in all, the probe included.")
    select: Select | None = Field(default=None, description="Selection for this tier; none: the technique's `select`.")


def _default_tiers() -> list[Tier]:
    return [Tier(at_least=0.75, samples=4), Tier(at_least=0.5, samples=8), Tier(samples=16)]


class AllocateParams(SamplingSettings):
    probe: int = Field(default=4, ge=1, le=4096, description="Samples drawn first, to measure the signal.")
    signal: Literal["agreement", "scorer"] = Field(
        default="agreement",
        description="agreement: the leading answer's share of the probe samples; "
        "scorer: the highest `scorer` value among them (e.g. a verifier's probability).",
    )
    scorer: ScorerName | None = Field(default=None, description="For signal scorer and select best_of / weighted.")
    tiers: list[Tier] = Field(
        default_factory=_default_tiers,
        min_length=1,
        description="Highest threshold first; a problem takes the first tier its signal reaches.",
    )
    select: Select = Field(default="vote", description="How the drawn samples become the output (tiers may override).")

    @model_validator(mode="after")
    def _consistent(self) -> AllocateParams:
        *upper, last = self.tiers
        if last.at_least is not None:
            raise ValueError("the last tier takes every signal below the others: leave out its at_least")
        thresholds = [tier.at_least for tier in upper]
        if None in thresholds:
            raise ValueError("every tier but the last needs at_least")
        if any(higher <= lower for higher, lower in zip(thresholds, thresholds[1:])):
            raise ValueError(f"tier thresholds must fall strictly, highest first: {thresholds}")
        short = [tier.samples for tier in self.tiers if tier.samples < self.probe]
        if short:
            raise ValueError(f"a tier draws at least the probe's {self.probe} samples, not {short[0]}")
        selects = {self.select, *(tier.select for tier in self.tiers)}
        if self.scorer is None and (self.signal == "scorer" or selects & {"best_of", "weighted"}):
            raise ValueError("signal scorer and select best_of / weighted need a `scorer`")
        return self


def tier_index(tiers: Sequence[Tier], signal: float) -> int:
    """The first tier whose threshold the signal reaches; the last tier when it reaches none."""
    return next(i for i, tier in enumerate(tiers) if tier.at_least is None or signal >= tier.at_least)


def expected_samples(signals: Sequence[float], tiers: Sequence[Tier]) -> float:
    """Mean samples per problem these tiers draw for problems with these probe signals."""
    if not signals:
        raise ValueError("no probe signals")
    return sum(tiers[tier_index(tiers, s)].samples for s in signals) / len(signals)


def calibrate_tiers(signals: Sequence[float], *, probe: int, samples: int, mean_samples: float) -> list[Tier]:
    """Two tiers that spend at most `mean_samples` per problem on these probe signals, as many as possible.

    Problems whose signal reaches the threshold stop at the `probe`; the rest get
    `samples`. The threshold is the highest signal value (so the most problems get
    more) whose mean stays within the target. `signals` are the `scores["signal"]`
    an `allocate` node recorded on a dev run (one per problem).
    """
    if not signals:
        raise ValueError("no probe signals")
    if mean_samples < probe:
        raise ValueError(f"a mean of {mean_samples} samples is below the probe's {probe}")
    if mean_samples >= samples:
        return [Tier(samples=samples)]
    thresholds = sorted(set(signals), reverse=True)  # the lowest stops every problem at the probe
    return next(
        tiers
        for tiers in ([Tier(at_least=t, samples=probe), Tier(samples=samples)] for t in thresholds)
        if expected_samples(signals, tiers) <= mean_samples
    )


def _agreement(ctx: Context, probe: list[Candidate]) -> float:
    """The leading answer's share of the probe (samples without an answer count against it)."""
    votes = tally(ctx, probe)
    return len(votes[0].parents) / len(probe) if votes else 0.0


async def _selected(ctx: Context, pool: list[Candidate], select: Select, scorer: str | None) -> list[Candidate]:
    if select == "pool":
        return pool
    if select == "vote":
        return tally(ctx, pool)
    assert scorer is not None  # the params' validator requires it
    scored = await apply_scorer(ctx, scorer, pool)
    if select == "weighted":
        return tally(ctx, scored, scorer, representative="best")
    return [max(scored, key=lambda c: c.scores[scorer])]  # max keeps the earlier of ties


@technique("allocate", AllocateParams, min_inputs=0)
async def allocate(ctx: Context, inputs: list[Candidate], params: AllocateParams) -> list[Candidate]:
    """Probe a few samples, then draw as many more as the signal's tier says and select (compute-optimal allocation).

    Easy problems (the probe agrees, or a verifier likes one) stop early; the samples
    saved go to the tiers below. Sample indices continue after the probe, so the pool
    is that of a `sample` node with the same settings and the generation cache serves
    either. Every output carries `scores["signal"]`, `scores["tier"]` (its index in
    `tiers`) and `scores["samples"]` (drawn in all).
    """
    pool = await ctx.sample(n=params.probe, first_index=0, **params.sampling())
    if params.signal == "scorer":
        assert params.scorer is not None
        pool = await apply_scorer(ctx, params.scorer, pool)
        signal = max(c.scores[params.scorer] for c in pool)
    else:
        signal = _agreement(ctx, pool)
    index = tier_index(params.tiers, signal)
    tier = params.tiers[index]
    if tier.samples > len(pool):
        pool += await ctx.sample(n=tier.samples - len(pool), first_index=len(pool), **params.sampling())
    marks = {"signal": signal, "tier": float(index), "samples": float(len(pool))}
    pool = [c.model_copy(update={"scores": {**c.scores, **marks}}) for c in pool]
    return await _selected(ctx, pool, tier.select or params.select, params.scorer)
