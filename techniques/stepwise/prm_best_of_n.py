"""Best-of-N and weighted vote with a process reward model: the baselines step-wise search must beat.

N answers are grown independently, step by step (the same step generation and
step budget as the searches, so the comparison is at equal cost and the PRM
sees the same steps), and scored once, when finished. `select: best` keeps the
answer with the highest PRM score (best-of-N); `select: vote` groups answers
and weighs each group by its members' scores (weighted majority vote).
"""

from __future__ import annotations

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._step_generation import PartialAnswer
from orchestra.techniques.stepwise._step_search import StepSearchParams, answer_candidates, search_parts


@technique("prm_best_of_n", StepSearchParams, requires=(CONTINUATION,), min_inputs=0)
async def prm_best_of_n(ctx: Context, inputs: list[Candidate], params: StepSearchParams) -> list[Candidate]:
    """Grow N independent answers step by step; pick by PRM score (best) or PRM-weighted vote."""
    generator, prm = search_parts(ctx, params)
    active = [PartialAnswer()] * params.rollouts
    done: list[PartialAnswer] = []
    try:
        while active:
            grown = [kids[0] for kids in await generator.extend_each(active)]
            done += [p for p in grown if p.finished]
            active = [p for p in grown if not p.finished]
    except BudgetExceeded:
        done += [p.cut_off() for p in active if p.steps]
        if not done:
            raise
    return answer_candidates(ctx, list(zip(done, await prm.score_all(done))), params)
