"""Votes: candidates grouped by agreeing answers (the task's `vote_keys`), heaviest group first.

The counting behind `majority_vote`, `adaptive_vote`, `weighted_best_of_n` and
the step-wise searches' `select: vote`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.tool_calls import without_arguments


def tally(
    ctx: Context,
    candidates: list[Candidate],
    weight_by: str | None = None,
    representative: Literal["first", "best"] = "first",
    ignore_arguments: tuple[str, ...] | list[str] = (),
) -> list[Candidate]:
    """Group candidates whose answers agree; one candidate per answer, heaviest first.

    A group weighs its number of members, or the sum of their `weight_by` scores
    (which must be non-negative: a log-probability would make more votes count
    less). Candidates without an extractable answer do not vote. Ties go to the
    answer seen first. The group's representative is its first member, or its
    highest-scored one (`best`); it comes back with `parents` naming every member
    and `scores["votes"]` its group's share of the total weight.

    Tool calls vote like any answer (same function, equal arguments); `ignore_arguments`
    names arguments left out of that comparison (a request id, a timestamp).
    """
    answers = [without_arguments(candidate.answer, ignore_arguments) for candidate in candidates]
    keys = ctx.task.vote_keys(answers) if ctx.task else answers
    groups: dict[str, list[Candidate]] = defaultdict(list)
    weights: dict[str, float] = defaultdict(float)
    for candidate, key in zip(candidates, keys):
        if key is None:
            continue
        weight = candidate.scores[weight_by] if weight_by else 1.0
        if weight < 0:
            raise ValueError(
                f"voting weights must be non-negative; scorer {weight_by!r} gave {weight:.3g} "
                "(weight by a probability-like scorer, not a log-probability)"
            )
        groups[key].append(candidate)
        weights[key] += weight
    total = sum(weights.values()) or 1.0
    ranked = sorted(groups, key=lambda k: -weights[k])  # stable: ties keep first-seen order
    out = []
    for key in ranked:
        members = groups[key]
        head = members[0]
        if representative == "best" and weight_by:
            head = max(members, key=lambda c: c.scores[weight_by])  # max keeps the first of ties
        out.append(
            Candidate(
                text=head.text,
                node=ctx.node,
                parents=tuple(c.id for c in members),
                model=head.model,
                answer=head.answer,
                finish_reason=head.finish_reason,
                scores={**head.scores, "votes": weights[key] / total},
                critiques=head.critiques,
            )
        )
    return out
