"""Critic (Archon): strengths and weaknesses of each candidate, for a ranker or fuser to use.

One call per candidate rather than one call over the whole list: a small model
loses track of which answer it is talking about in a long listwise prompt, and
per-candidate calls run concurrently, so the backend batches them anyway. The
critique is attached to the candidate it is about, keyed by that candidate's id
(`Candidate.critiques[candidate.id]`); the candidate keeps its id and text.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques._candidate_list import clip

CRITIC_PROMPT = """Problem:
{problem}

Proposed solution:
{solution}

Review the proposed solution: check each step and the final answer. Write "Strengths:" followed by what it gets right, then "Weaknesses:" followed by its mistakes (or "none")."""

_HEADING = re.compile(r"\b(strengths?|weakness(?:es)?)\b\s*[*_]*\s*:\s*[*_]*", re.IGNORECASE)
NOT_STATED = "not stated"


class CriticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=128, ge=1, description="Tokens per critique.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 means greedy.")


def parse_critique(text: str) -> str | None:
    """A critique in a fixed shape, or None when the reply holds none.

    With "Strengths:" / "Weaknesses:" headings (markdown allowed, either order,
    either missing; text before the first heading is dropped), the result is
    "Strengths: ...\\nWeaknesses: ..." with
    "not stated" for a missing part; prose without headings is kept as it is,
    since it still says something about the answer; an empty reply gives None.
    """
    text = text.strip()
    if not text:
        return None
    headings = list(_HEADING.finditer(text))
    if not headings:
        return clip(text)
    parts: dict[str, list[str]] = {"strengths": [], "weaknesses": []}
    for i, heading in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        body = clip(" ".join(text[heading.end() : end].split()).strip(" *_#>-"))
        kind = "strengths" if heading.group(1).lower().startswith("strength") else "weaknesses"
        if body:
            parts[kind].append(body)
    if not parts["strengths"] and not parts["weaknesses"]:
        return None  # headings with nothing under them
    strengths = " ".join(parts["strengths"]) or NOT_STATED
    weaknesses = " ".join(parts["weaknesses"]) or NOT_STATED
    return f"Strengths: {strengths}\nWeaknesses: {weaknesses}"


async def critique(ctx: Context, candidate: Candidate, params: CriticParams) -> str | None:
    """One candidate's critique (parsed), or None when the model wrote nothing usable."""
    prompt = CRITIC_PROMPT.format(problem=ctx.problem.prompt, solution=clip(candidate.text) or "(empty)")
    return parse_critique(await ctx.ask(prompt, max_tokens=params.max_tokens, temperature=params.temperature))


@technique("critic", CriticParams, must_be_followed_by=("rank", "fuse"))
async def critic(ctx: Context, inputs: list[Candidate], params: CriticParams) -> list[Candidate]:
    """Attach strengths and weaknesses to each candidate, keyed by its id (order and ids kept).

    A candidate whose critique came back empty passes on without one.
    """
    critiques = await asyncio.gather(*(critique(ctx, c, params) for c in inputs))
    return [
        c.model_copy(update={"critiques": {**c.critiques, c.id: text}}) if text else c
        for c, text in zip(inputs, critiques)
    ]
