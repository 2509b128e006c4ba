"""Beam search over steps.

N = `rollouts` partial answers are alive at each step. `beam_width` (M) is how
many next steps each surviving beam spawns; after scoring all N candidates with
the PRM, the N / M best unfinished ones survive and each spawns M children, so
N steps are generated per round. (This is the convention of search-and-learn:
N is the total number of beams, M the branching factor, N / M the number kept.)
Finished answers leave the beam with their score; the search ends when N
answers have finished, no beam is left, or `max_steps` is reached. The final
answer is picked among the finished ones (`select`: best score or weighted vote).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._step_generation import PartialAnswer
from orchestra.techniques.stepwise._step_search import (
    Scored,
    StepSearchParams,
    answer_candidates,
    best_scored,
    search_parts,
)
from orchestra.step_events import ids


class BeamSearchParams(StepSearchParams):
    beam_width: int = Field(
        default=2,
        ge=1,
        description="M: next steps each kept beam spawns per round; N / M beams are kept (N = rollouts).",
    )

    @model_validator(mode="after")
    def _divides(self) -> BeamSearchParams:
        if self.beam_width > self.rollouts:
            raise ValueError(f"beam_width ({self.beam_width}) exceeds rollouts ({self.rollouts})")
        return self


@technique("beam_search", BeamSearchParams, requires=(CONTINUATION,), min_inputs=0)
async def beam_search(ctx: Context, inputs: list[Candidate], params: BeamSearchParams) -> list[Candidate]:
    """Keep the N / beam_width best partial answers by PRM score, each spawning beam_width next steps."""
    generator, prm = search_parts(ctx, params)
    n, width = params.rollouts, params.beam_width
    keep = max(1, n // width)
    finished: list[Scored] = []
    beams: list[Scored] = [(PartialAnswer(), 0.0)]
    counts = [n]  # the empty answer spawns all N first steps
    try:
        while beams and len(finished) < n:
            children = [c for kids in await generator.extend_each([b for b, _ in beams], counts) for c in kids]
            scored = list(zip(children, await prm.score_all(children)))
            finished += [pair for pair in scored if pair[0].finished]
            growing = [pair for pair in scored if not pair[0].finished]
            beams = best_scored(growing, keep)
            kept = [b.text for b, _ in beams]
            dropped = dict.fromkeys(p.text for p, _ in growing if p.text not in kept)
            if growing:
                ctx.record({"kind": "prune", "depth": len(growing[0][0].steps),
                            "kept": ids(kept), "dropped": ids(dropped)})
            counts = [width] * len(beams)
    except BudgetExceeded:
        if not finished and not any(b.steps for b, _ in beams):
            raise
        finished += [(b.cut_off(), s) for b, s in beams if b.steps]
    return answer_candidates(ctx, finished, params)
