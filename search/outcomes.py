"""Per-problem outcomes of one configuration: what comparing two configurations *paired* needs.

Accuracy alone cannot say whether two configurations differ: 35% against 25%
on 20 problems is one standard error, while a gap on the same few hundred
problems may be far more. So every trial keeps, for each dev problem it ran
(in the dev split's order), whether the answer was exactly right (score >= 1)
and what the problem cost; the winner rule (`orchestra.search.winner`) compares
configurations problem by problem on the problems they share.

In a study the outcomes are stored as a JSON list of `[problem_id, 0|1, cost]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.results import ProblemResult
from orchestra.search.objectives import Objective


@dataclass(frozen=True)
class Outcome:
    """How one configuration did on one problem."""

    problem_id: str
    correct: bool
    cost: float


def outcomes_of(results: Iterable[ProblemResult], objective: Objective) -> list[Outcome]:
    """Exact correctness and the objective's cost of each result, in order."""
    return [Outcome(r.problem_id, r.correct, objective.spent(r.usage)) for r in results]


def to_json(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    return [[o.problem_id, int(o.correct), o.cost] for o in outcomes]


def from_json(rows: Sequence[Sequence[Any]] | None) -> list[Outcome]:
    return [Outcome(str(pid), bool(correct), float(cost)) for pid, correct, cost in rows or ()]
