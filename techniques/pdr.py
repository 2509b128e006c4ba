"""Parallel-Distill-Refine (Madaan et al., 2025): drafts in parallel, distilled into a short workspace, in rounds.

Round 1 writes `drafts` answers in parallel from the problem (or takes the
input candidates as its drafts); each later round writes them from the problem
plus the workspace. After each round the drafts are distilled into a short
workspace: a summary of the answers they reach, what they agree on and their
mistakes, so what one round passes to the next stays bounded however many
drafts it had. Finally `n` answers are refined from the last workspace. When
the model's summary comes back empty, the workspace lists the drafts' final
answers instead, so a round is never lost.

The final answers name the last round's drafts as parents.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.technique import technique
from orchestra.techniques._candidate_list import clip, numbered

DISTILL_PROMPT = """Problem:
{problem}

Here are {k} draft solutions:

{drafts}

Summarize the drafts in a few sentences: which final answers they reach, which steps they agree on, and any mistakes you see. Do not write a new solution."""

FROM_WORKSPACE_PROMPT = """Notes from earlier attempts at the problem below:
{workspace}

Problem:
{problem}

Use the notes, but check every step yourself."""


class PDRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=2, ge=1, le=16, description="Rounds of parallel drafts, each distilled into the workspace.")
    drafts: int = Field(default=4, ge=1, le=256, description="Parallel drafts per round.")
    draft_max_tokens: int = Field(default=128, ge=1, description="Tokens per draft.")
    draft_temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="Drafts should differ: > 0.")
    workspace_max_tokens: int = Field(default=96, ge=1, description="Tokens of each distilled workspace summary.")
    n: int = Field(default=1, ge=1, le=64, description="Final answers refined from the last workspace.")
    max_tokens: int = Field(default=256, ge=1, description="Tokens per final answer.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="For the final answers; 0 means greedy.")


def answers_tally(drafts: list[Candidate]) -> str:
    """The drafts' final answers with counts: the workspace when the model's summary is empty."""
    counts = Counter(d.answer for d in drafts if d.answer is not None)
    if not counts:
        return "The drafts reached no final answer."
    return "Final answers of the drafts: " + ", ".join(f"{a} ({n}x)" for a, n in counts.most_common()) + "."


async def distill(ctx: Context, drafts: list[Candidate], params: PDRParams) -> str:
    """A short summary of the drafts (or their answers' tally when the model writes none)."""
    prompt = DISTILL_PROMPT.format(problem=ctx.problem.prompt, k=len(drafts), drafts=numbered(drafts))
    return clip(await ctx.ask(prompt, max_tokens=params.workspace_max_tokens)) or answers_tally(drafts)


def from_workspace(problem: str, workspace: str) -> tuple[Message, ...]:
    return (Message(role="user", content=FROM_WORKSPACE_PROMPT.format(workspace=workspace, problem=problem)),)


@technique("pdr", PDRParams, min_inputs=0)
async def pdr(ctx: Context, inputs: list[Candidate], params: PDRParams) -> list[Candidate]:
    """Parallel drafts -> distilled workspace, for `rounds` rounds, then n answers refined from it."""
    workspace: str | None = None
    drafts: list[Candidate] = []
    for round_index in range(params.rounds):
        if round_index == 0 and inputs:
            drafts = list(inputs)
        else:
            drafts = await ctx.sample(
                n=params.drafts,
                messages=from_workspace(ctx.problem.prompt, workspace) if workspace else None,
                parents=tuple(d.id for d in drafts),
                temperature=params.draft_temperature,
                max_tokens=params.draft_max_tokens,
                seed=ctx.seed + round_index,
            )
        workspace = await distill(ctx, drafts, params)
    assert workspace is not None  # rounds >= 1
    return await ctx.sample(
        n=params.n,
        messages=from_workspace(ctx.problem.prompt, workspace),
        parents=tuple(d.id for d in drafts),
        temperature=params.temperature,
        max_tokens=params.max_tokens,
    )
