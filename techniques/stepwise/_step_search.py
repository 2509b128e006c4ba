"""What every step-wise search shares: its budget units, its PRM, how it picks the answer.

All step-wise searches (particle filtering, beam search, DVTS, MCTS, best-first,
and PRM-ranked best-of-N) take the same budget units so they can be compared at
equal cost: `rollouts` (N: particles, total beams, tree leaves to find, samples)
and step generation's `max_steps`/`step_tokens`. No search generates more than
N x max_steps steps, so none spends more than N x max_steps x step_tokens
generator tokens; the recipe's budget caps the rest (PRM calls included). When
the budget refuses a call, the search stops and answers with what it has.

The output is one candidate per finished answer, the chosen one first:
`select: best` takes the highest PRM score, `select: vote` groups answers and
weighs each group by the sum of its members' scores (weighted majority vote).
Each candidate carries `scores["prm"]` (its aggregated PRM score) and
`scores["steps"]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from orchestra.answers import extract_answer
from orchestra.backends import HIDDEN_STATES
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.reward.process_reward import PRMSpec, get_process_reward_model, score_steps
from orchestra.techniques._voting import tally
from orchestra.techniques.stepwise._step_generation import PartialAnswer, StepGenerator, StepParams
from orchestra.step_events import record_scored

#: The score name searches write.
PRM_SCORE = "prm"

#: A partial (or finished) answer with its PRM score.
Scored = tuple[PartialAnswer, float]


class StepSearchParams(StepParams):
    """Budget units, step settings, PRM and final pick: the params every step-wise search takes."""

    rollouts: int = Field(default=4, ge=1, le=1024, description="N: particles, beams, leaves or samples (the budget unit).")
    prm: PRMSpec = Field(
        default_factory=lambda: PRMSpec(name="self_certainty"),
        description="The process reward model that scores partial answers, e.g. {name: llm, aggregate: min}.",
    )
    select: Literal["best", "vote"] = Field(
        default="best", description="best: the highest PRM score; vote: answers weighed by their PRM scores."
    )


#: The params of the searches that grow a tree (MCTS, best-first): also how wide a node branches.
class TreeSearchParams(StepSearchParams):
    branching: int = Field(default=2, ge=1, le=64, description="Next steps generated under a node when it is expanded.")


def best_scored(scored: Sequence[Scored], k: int) -> list[Scored]:
    """The `k` highest-scored (ties: earlier first)."""
    return sorted(scored, key=lambda pair: -pair[1])[:k]


class PRMScorer:
    """Scores partial answers of one search with its PRM, each distinct prefix once, and
    records each as a `scored` event (orchestra.step_events), so the search's tree can be drawn."""

    def __init__(self, ctx: Context, spec: PRMSpec):
        self.ctx = ctx
        self.spec = spec
        self.known: dict[str, float] = {}

    async def score(self, partial: PartialAnswer) -> float:
        key = partial.text
        if key not in self.known:
            score = await score_steps(self.ctx, self.spec, partial.steps)
            if key not in self.known:  # a concurrent call may have scored it meanwhile
                self.known[key] = score
                record_scored(self.ctx, partial.steps, score, partial.finished)
        return self.known[key]

    async def score_all(self, partials: Sequence[PartialAnswer]) -> list[float]:
        distinct = {p.text: p for p in partials}
        values = await asyncio.gather(*(self.score(p) for p in distinct.values()), return_exceptions=True)
        for value in values:
            if isinstance(value, BaseException):
                raise value
        return [self.known[p.text] for p in partials]


def search_parts(ctx: Context, params: StepSearchParams) -> tuple[StepGenerator, PRMScorer]:
    """The step generator and PRM scorer of one search (hidden states asked for when the PRM reads them)."""
    wants_hidden = HIDDEN_STATES in get_process_reward_model(params.prm.name).requires
    return StepGenerator(ctx, params, hidden_states=wants_hidden), PRMScorer(ctx, params.prm)


def answer_candidates(ctx: Context, finished: Sequence[Scored], params: StepSearchParams) -> list[Candidate]:
    """One candidate per finished answer, the chosen one first (see the module docstring)."""
    extract = ctx.task.extract_answer if ctx.task else None
    model = ctx.model().alias
    candidates = []
    for partial, score in finished:
        text = partial.text
        answer = extract(text) if extract is not None else extract_answer(text)
        candidates.append(
            Candidate(
                text=text,
                node=ctx.node,
                model=model,
                answer=answer,
                completion_tokens=partial.completion_tokens,
                finish_reason=partial.finish_reason,
                scores={PRM_SCORE: score, "steps": float(len(partial.steps))},
            )
        )
    ranked = sorted(candidates, key=lambda c: -c.scores[PRM_SCORE])  # stable: ties keep search order
    if params.select == "best":
        return ranked
    voted = tally(ctx, ranked, PRM_SCORE, representative="best")
    chosen = voted[0].parents if voted else ()
    return [*voted[:1], *(c for c in ranked if c.id not in chosen)] if voted else ranked
