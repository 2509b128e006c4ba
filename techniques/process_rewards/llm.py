"""The `llm` PRM (LLM-as-PRM): a model judges the partial solution, with no training.

The problem and the steps so far are shown with the question "is every step so
far correct?", the reply is prefilled with "Verdict:", and the score is P(Yes) /
(P(Yes) + P(No)) at the next token (`_verdict.verdict_probability`): one prefill
and one token per scored prefix, on the spec's `model` alias (default: the
node's model).

Each prefix is judged once per node and problem: a search that scores its
particles every step asks the `llm` PRM only about the newest step of each, and
copies made by resampling cost nothing. Those calls are metered like the
generator's (they go through `ctx.model(...)`).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence

from orchestra.backends import CONTINUATION, LOGPROBS
from orchestra.context import Context
from orchestra.reward.process_reward import PRMSpec, Step, process_reward_model
from orchestra.problem import Message
from orchestra.techniques._candidate_list import clip
from orchestra.techniques._verdict import verdict_probability

LLM_PRM_PROMPT = """Problem:
{problem}

Solution so far (it may be unfinished):
{steps}

Is every step of the solution so far correct? Answer Yes or No."""


#: Verdicts already paid for, per node context: (model alias, prefix text) -> P(Yes).
_JUDGED: dict[int, dict[tuple[str | None, str], asyncio.Future[float]]] = {}


def _judged(ctx: Context) -> dict[tuple[str | None, str], asyncio.Future[float]]:
    """The verdict memo of one node on one problem, dropped with its context."""
    key = id(ctx)
    if key not in _JUDGED:
        _JUDGED[key] = {}
        weakref.finalize(ctx, _JUDGED.pop, key, None)
    return _JUDGED[key]


def llm_prm_messages(problem: str, steps: Sequence[Step]) -> tuple[Message, ...]:
    shown = "\n".join(f"Step {i + 1}: {clip(step.text.strip()) or '(empty)'}" for i, step in enumerate(steps))
    return (Message(role="user", content=LLM_PRM_PROMPT.format(problem=problem, steps=shown or "(no steps)")),)


@process_reward_model("llm", requires=(LOGPROBS, CONTINUATION))
async def llm(ctx: Context, spec: PRMSpec, steps: Sequence[Step]) -> list[float]:
    """P(Yes) that a model gives "is every step so far correct?" after each step.

    With aggregate `last` (or `model`) only the newest prefix is judged; earlier
    steps this node never judged come back as NaN.
    """
    judged = _judged(ctx)
    only_last = spec.aggregate in ("last", "model")
    scores = []
    for end in range(1, len(steps) + 1):
        prefix = steps[:end]
        key = (spec.model, "".join(step.text for step in prefix))
        if key not in judged and only_last and end < len(steps):
            scores.append(math.nan)  # never judged, and `last` does not need it: not asked, not paid
            continue
        if key not in judged:  # a future: concurrent scorings of one prefix share one call
            messages = llm_prm_messages(ctx.problem.prompt, prefix)
            judged[key] = asyncio.ensure_future(verdict_probability(ctx, messages, model=spec.model))
        scores.append(await judged[key])
    return scores
