"""Ranker (Archon): one listwise LLM call orders the candidates; the best `top_k` go on.

The model sees the candidates numbered [1]..[k] (with their critiques, when a
critic ran before) and is asked for a ranking such as "[2] > [1] > [3]". Small
models answer loosely, so the parser takes what it can (see `parse_ranking`).
When nothing usable comes back, the fallback is explicit: candidates keep their
input order, or are ordered by an existing score when `fallback_score` names
one, and every output candidate records `scores["rank_fallback"] = 1.0`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques._candidate_list import numbered

RANK_PROMPT = """Problem:
{problem}

Candidate solutions:

{candidates}

Rank the {k} candidate solutions from best to worst: correct ones first. Reply with the ranking only, as numbers in brackets, for example: {example}"""

#: Score names written by `rank`: the candidate's place (1.0 for the first, 1/2, 1/3, ...)
#: and whether the model's ranking could not be parsed (1.0) or could (0.0).
RANK_SCORE = "rank"
FALLBACK_SCORE = "rank_fallback"

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_NAMED = re.compile(r"(?:candidate|solution|response|answer|option|#)\s*(\d+)", re.IGNORECASE)
_BARE = re.compile(r"(?<![\d.])\d+(?!\.?\d)")  # whole numbers, not parts of decimals


class RankParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=3, ge=1, description="How many of the best-ranked candidates to pass on.")
    max_tokens: int = Field(default=48, ge=1, description="Tokens for the ranking reply.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 means greedy.")
    with_critiques: bool = Field(default=True, description="Show each candidate's critique, when it has one.")
    fallback_score: str | None = Field(
        default=None,
        description="When the ranking cannot be parsed, order by this score in `Candidate.scores` "
        "(highest first; candidates without it last) instead of keeping the input order.",
    )


def parse_ranking(text: str, k: int) -> list[int] | None:
    """The ranking in a reply about k candidates, as 0-based indices, best first.

    Reads bracketed numbers ("[2] > [1]"); without any, numbers named as
    candidates ("Candidate 2", "#2"); without those, bare numbers on the first
    non-empty line ("2, 1, 3"). Numbers out of 1..k and repeats are dropped;
    candidates the reply leaves out follow in their input order. None when no
    number in range is found: the caller falls back.
    """
    numbers = [int(n) for n in _BRACKETED.findall(text)]
    if not numbers:
        numbers = [int(n) for n in _NAMED.findall(text)]
    if not numbers:
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        numbers = [int(n) for n in _BARE.findall(first_line)]
    order: list[int] = []
    for number in numbers:
        if 1 <= number <= k and number - 1 not in order:
            order.append(number - 1)
    if not order:
        return None
    return order + [i for i in range(k) if i not in order]


def fallback_order(candidates: list[Candidate], score: str | None) -> list[int]:
    """Input order, or by `score` (highest first, stable; candidates without it last)."""
    order = list(range(len(candidates)))
    if score is None:
        return order
    return sorted(order, key=lambda i: (score not in candidates[i].scores, -candidates[i].scores.get(score, 0.0)))


def _example(k: int) -> str:
    """A ranking of k candidates that is not the input order, so it is not a default to copy."""
    shown = list(range(1, min(k, 3) + 1))
    shown = shown[1:] + shown[:1] if len(shown) > 1 else shown
    return " > ".join(f"[{n}]" for n in shown)


@technique("rank", RankParams)
async def rank(ctx: Context, inputs: list[Candidate], params: RankParams) -> list[Candidate]:
    """Order the candidates with one listwise LLM call and keep the best `top_k`.

    Writes `scores["rank"]` (1.0, 1/2, 1/3 ... by place) and `scores["rank_fallback"]`
    (1.0 when the reply held no usable ranking and the fallback order was used).
    A single candidate passes without a call.
    """
    if len(inputs) <= 1:
        order, fell_back = list(range(len(inputs))), False
    else:
        prompt = RANK_PROMPT.format(
            problem=ctx.problem.prompt,
            candidates=numbered(inputs, with_critiques=params.with_critiques),
            k=len(inputs),
            example=_example(len(inputs)),
        )
        reply = await ctx.ask(prompt, max_tokens=params.max_tokens, temperature=params.temperature)
        parsed = parse_ranking(reply, len(inputs))
        fell_back = parsed is None
        order = fallback_order(inputs, params.fallback_score) if parsed is None else parsed
    return [
        inputs[i].with_score(RANK_SCORE, 1.0 / (place + 1)).with_score(FALLBACK_SCORE, float(fell_back))
        for place, i in enumerate(order[: params.top_k])
    ]
