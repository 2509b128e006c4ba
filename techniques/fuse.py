"""Fuser (Archon): merge the input candidates, and their critiques, into new answers.

The model sees every input candidate (numbered, each with its critique when a
critic ran before) and writes `n` new answers that keep what the candidates got
right and fix what they got wrong. The problem comes last in the prompt, so the
task's own answer instruction is the last thing the model reads, and the new
answers are extracted like any other (task-aware). Each new candidate names all
inputs as its parents.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.technique import technique
from orchestra.techniques._candidate_list import critique_of, numbered

FUSE_PROMPT = """Here are {k} candidate solutions to the problem below{critiqued}. Some of them may be wrong.

{candidates}

Problem:
{problem}

Write one correct solution: keep what the candidates got right and fix their mistakes."""


class FuseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=64, description="New candidates to write.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 means greedy (use > 0 with n > 1).")
    max_tokens: int = Field(default=256, ge=1, description="Tokens per fused answer.")
    with_critiques: bool = Field(default=True, description="Show each candidate's critique, when it has one.")


def fuse_prompt(problem: str, candidates: list[Candidate], with_critiques: bool) -> str:
    critiqued = with_critiques and any(critique_of(c) for c in candidates)
    return FUSE_PROMPT.format(
        k=len(candidates),
        critiqued=", with critiques" if critiqued else "",
        candidates=numbered(candidates, with_critiques=with_critiques),
        problem=problem,
    )


@technique("fuse", FuseParams)
async def fuse(ctx: Context, inputs: list[Candidate], params: FuseParams) -> list[Candidate]:
    """Write n new answers from the input candidates (and their critiques); an empty pool stays empty."""
    if not inputs:
        return []
    prompt = fuse_prompt(ctx.problem.prompt, inputs, params.with_critiques)
    return await ctx.sample(
        n=params.n,
        messages=(Message(role="user", content=prompt),),
        parents=tuple(c.id for c in inputs),
        temperature=params.temperature,
        max_tokens=params.max_tokens,
    )
