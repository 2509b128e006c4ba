"""Particle filtering over partial answers (Puri et al., 2025), and particle Gibbs.

N particles grow one step at a time. After each step every particle's PRM score
r (aggregated as the PRM spec says) is its observation likelihood: its log-weight
grows by log r, and the population is resampled in proportion to
softmax(log-weights / softmax_temperature) — multinomially or systematically,
every step or only when the effective sample size falls below `ess_threshold`
x (particles still active). Resampling resets the weights; between resamplings
they accumulate, so a particle's weight is the product of its scores since.

Finished particles (the model ended its answer, or `max_steps` was reached)
leave the population with their score and are never extended or copied again;
the population shrinks by them. The answer is the finished particle with the
best score, or the weighted vote of all finished ones (`select`).

Particle Gibbs (`gibbs_iterations` > 1) reruns the filter conditioned on a
reference trajectory drawn from the previous run's finished particles by
weight: the reference keeps one slot at every step and competes in resampling,
so good answers are kept while the other particles explore around them. It
costs `gibbs_iterations` times the steps of one run.
"""

from __future__ import annotations

import math
import random

from pydantic import Field

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._resampling import Resampler, effective_sample_size, normalized, resample
from orchestra.techniques.stepwise._step_generation import PartialAnswer, StepGenerator
from orchestra.techniques.stepwise._step_search import (
    PRMScorer,
    Scored,
    StepSearchParams,
    answer_candidates,
    search_parts,
)
from orchestra.step_events import ids

#: log(0) stand-in: a PRM score of 0 makes a particle all but impossible, not a NaN.
_LOG_FLOOR = math.log(1e-30)


class ParticleFilteringParams(StepSearchParams):
    softmax_temperature: float = Field(
        default=1.0, gt=0.0, description="Weights are softmax(log-weight / this): higher keeps more diversity."
    )
    resampler: Resampler = Field(default="systematic", description="systematic (lower variance) or multinomial.")
    ess_threshold: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Resample when the effective sample size < this x active particles; 1: whenever weights "
        "differ, 0: never (independent particles, scored step by step).",
    )
    gibbs_iterations: int = Field(default=1, ge=1, le=16, description="More than 1: particle Gibbs.")



async def run_filter(
    generator: StepGenerator,
    prm: PRMScorer,
    params: ParticleFilteringParams,
    rng: random.Random,
    reference: PartialAnswer | None = None,
) -> list[Scored]:
    """One sequential Monte Carlo sweep; the finished particles with their final scores.

    With a `reference`, slot 0 replays it step by step instead of generating
    (conditional SMC, for particle Gibbs) and is never resampled away.
    """
    active = [PartialAnswer()] * params.rollouts
    log_weights = [0.0] * params.rollouts
    scores = [0.0] * params.rollouts
    pinned = 0 if reference is not None else None  # index of the reference's slot
    finished: list[Scored] = []
    depth = 0
    try:
        while active:
            depth += 1
            growing = [i for i in range(len(active)) if i != pinned]
            children = await generator.extend_each([active[i] for i in growing])
            grown = list(active)
            for i, kids in zip(growing, children):
                grown[i] = kids[0]
            if pinned is not None:
                grown[pinned] = reference.prefix(depth)  # type: ignore[union-attr]
            scores = await prm.score_all(grown)
            log_weights = [w + (math.log(s) if s > 0 else _LOG_FLOOR) for w, s in zip(log_weights, scores)]
            keep = [i for i in range(len(grown)) if not grown[i].finished]
            finished += [(grown[i], scores[i]) for i in range(len(grown)) if grown[i].finished]
            pinned = keep.index(pinned) if pinned in keep else None
            active = [grown[i] for i in keep]
            log_weights = [log_weights[i] for i in keep]
            scores = [scores[i] for i in keep]
            if not active:
                break
            weights = normalized(log_weights, params.softmax_temperature)
            if effective_sample_size(weights) < params.ess_threshold * len(active) - 1e-9:
                picks = resample(weights, params.resampler, rng)
                if pinned is not None:
                    picks[pinned] = pinned
                active = [active[j] for j in picks]
                scores = [scores[j] for j in picks]
                log_weights = [0.0] * len(active)
                prm.ctx.record({"kind": "resample", "depth": depth, "kept": ids(p.text for p in active)})
    except BudgetExceeded:
        if not finished and depth <= 1:
            raise
        finished += [(p.cut_off(), s) for p, s in zip(active, scores) if p.steps]
    return finished


@technique("particle_filtering", ParticleFilteringParams, requires=(CONTINUATION,), min_inputs=0)
async def particle_filtering(ctx: Context, inputs: list[Candidate], params: ParticleFilteringParams) -> list[Candidate]:
    """Grow N particles step by step, resampling them by PRM weight; finished ones are kept, never revived."""
    generator, prm = search_parts(ctx, params)
    finished = await run_filter(generator, prm, params, ctx.rng)
    for _ in range(params.gibbs_iterations - 1):
        if not finished:
            break
        weights = normalized([math.log(s) if s > 0 else _LOG_FLOOR for _, s in finished], params.softmax_temperature)
        reference = finished[ctx.rng.choices(range(len(finished)), weights=weights)[0]][0]
        try:
            finished = await run_filter(generator, prm, params, ctx.rng, reference)
        except BudgetExceeded:
            break
    return answer_candidates(ctx, finished, params)
