"""Diverse verifier tree search (DVTS, Beeching et al., 2024): beam search split into subtrees.

DVTS splits beam search's N = `rollouts` into N / M independent subtrees (M =
`beam_width`), one per first step: each subtree keeps only its single best beam
and expands it by M per round, so the subtrees cannot all collapse onto one
high-scoring prefix the way one beam does. Each subtree ends with one answer;
the final answer is picked among them (`select`: best score or weighted vote).
It takes beam search's params, so the two compare at equal settings.
"""

from __future__ import annotations

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._step_generation import PartialAnswer
from orchestra.techniques.stepwise._step_search import Scored, answer_candidates, best_scored, search_parts
from orchestra.step_events import ids
from orchestra.techniques.stepwise.beam_search import BeamSearchParams


@technique("dvts", BeamSearchParams, requires=(CONTINUATION,), min_inputs=0)
async def dvts(ctx: Context, inputs: list[Candidate], params: BeamSearchParams) -> list[Candidate]:
    """Diverse verifier tree search: N / beam_width independent subtrees, each a greedy beam of width 1."""
    generator, prm = search_parts(ctx, params)
    subtrees = max(1, params.rollouts // params.beam_width)
    finished: list[Scored] = []
    beams: list[Scored] = []
    try:
        first = (await generator.extend_each([PartialAnswer()], [subtrees]))[0]
        for child, score in zip(first, await prm.score_all(first)):
            (finished if child.finished else beams).append((child, score))
        while beams:
            children = await generator.extend_each([b for b, _ in beams], [params.beam_width] * len(beams))
            flat = [c for kids in children for c in kids]
            scores = iter(await prm.score_all(flat))
            survivors: list[Scored] = []
            kept: list[str] = []
            for kids in children:  # one subtree's children: its best one goes on
                best = best_scored([(kid, next(scores)) for kid in kids], 1)[0]
                (finished if best[0].finished else survivors).append(best)
                kept.append(best[0].text)
            beams = survivors
            dropped = dict.fromkeys(kid.text for kid in flat if kid.text not in kept)
            ctx.record({"kind": "prune", "depth": len(flat[0].steps),
                        "kept": ids(kept), "dropped": ids(dropped)})
    except BudgetExceeded:
        if not finished and not beams:
            raise
        finished += [(b.cut_off(), s) for b, s in beams]
    return answer_candidates(ctx, finished, params)
