"""Best-first tree search: always expand the highest-scored partial answer found so far.

A priority queue holds every unfinished partial answer generated, keyed by its
PRM score. Each iteration pops the best one, generates `branching` next steps
under it and queues the unfinished children; finished ones are collected. Unlike
beam search nothing is ever pruned, so the search can back off to an earlier,
better-scored branch when a line of steps turns bad. It stops when `rollouts`
answers have finished, the queue is empty, or it has generated rollouts x
max_steps steps; the answer is picked among the finished ones (`select`).
"""

from __future__ import annotations

import heapq
import itertools

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._step_generation import PartialAnswer
from orchestra.techniques.stepwise._step_search import Scored, TreeSearchParams, answer_candidates, search_parts
from orchestra.step_events import partial_id


@technique("best_first", TreeSearchParams, requires=(CONTINUATION,), min_inputs=0)
async def best_first(ctx: Context, inputs: list[Candidate], params: TreeSearchParams) -> list[Candidate]:
    """Expand the best-scored unfinished partial answer, branching next steps at a time, until N finish."""
    generator, prm = search_parts(ctx, params)
    order = itertools.count()  # ties: first generated first
    frontier: list[tuple[float, int, PartialAnswer]] = [(0.0, next(order), PartialAnswer())]
    finished: list[Scored] = []
    allowance = params.rollouts * params.max_steps
    try:
        while frontier and len(finished) < params.rollouts and generator.steps_generated + params.branching <= max(allowance, params.branching):
            _, _, best = heapq.heappop(frontier)
            ctx.record({"kind": "expand", "id": partial_id(best.text) if best.steps else None, "depth": len(best.steps)})
            kids = await generator.extend(best, params.branching)
            for kid, score in zip(kids, await prm.score_all(kids)):
                if kid.finished:
                    finished.append((kid, score))
                else:
                    heapq.heappush(frontier, (-score, next(order), kid))
    except BudgetExceeded:
        if not finished and len(frontier) <= 1:
            raise
    if not finished:  # out of steps or budget before any answer ended: the best partial ones
        finished = [(p.cut_off(), -key) for key, _, p in sorted(frontier) if p.steps]
    return answer_candidates(ctx, finished, params)
