"""Honest evaluation: the searched recipe on the held-out test split, beside hand-written ones.

The search only ever saw dev problems, so its dev accuracy is optimistic (it is
the maximum over many trials). The test split, run once per recipe after the
search, is what to report; hand-written recipes run on the same test problems
and their cost per problem is shown against the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestra.api import arun
from orchestra.cache import GenerationCache
from orchestra.recipe import Recipe
from orchestra.tasks import Task
from orchestra.search.objectives import Objective


@dataclass(frozen=True)
class HoldoutRow:
    recipe: str
    accuracy: float
    cost: float
    within_budget: bool
    problems: int


async def holdout(
    recipes: list[Recipe],
    task: Task,
    objective: Objective,
    limit: int,
    *,
    cache: GenerationCache | None,
    concurrency: int = 32,
) -> list[HoldoutRow]:
    """Run each recipe on the first `limit` test problems; same problems for all."""
    problems = task.problems("test", limit)
    rows = []
    for recipe in recipes:
        run = await arun(recipe, task, problems=problems, split="test", cache=cache if cache is not None else False,
                         concurrency=concurrency)
        cost = objective.cost_of(run.summary)
        rows.append(HoldoutRow(recipe.name, run.summary.accuracy, cost, objective.feasible(cost), len(problems)))
    return rows
