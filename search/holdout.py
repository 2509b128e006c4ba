"""Honest evaluation: the searched recipe on the held-out test split, beside greedy and hand-written ones.

The search only ever saw dev problems, so its dev accuracy is optimistic (it is
the maximum over many trials). The test split, run once per recipe after the
search, is what to report: every recipe runs on the same test problems, its
accuracy (exactly right, score >= 1) is shown with a bootstrap interval, and
its paired difference to greedy — one greedy answer from the same model, the
baseline every recipe must beat — says whether it is ahead by more than noise.
Costs are shown against the search's budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestra.api import arun
from orchestra.cache import GenerationCache
from orchestra.oracle import marked
from orchestra.recipe import Recipe
from orchestra.significance import Difference, Interval, mean_interval, paired_difference, problems_to_detect
from orchestra.tasks import Task
from orchestra.search.objectives import Objective

#: The name of the baseline row.
GREEDY = "greedy"


@dataclass(frozen=True)
class HoldoutRow:
    recipe: str
    accuracy: Interval
    cost: float
    within_budget: bool
    problems: int
    versus_greedy: Difference | None  # None for greedy itself
    oracle: tuple[str, ...] = ()  # where the recipe chooses with an oracle scorer (node.param=scorer)

    @property
    def label(self) -> str:
        """The recipe's name as a table shows it, marked when it chooses with an oracle scorer."""
        return marked(self.recipe, self.oracle)

    def to_json(self) -> dict[str, Any]:
        versus = self.versus_greedy
        return {
            "recipe": self.recipe, "oracle": list(self.oracle), "accuracy": self.accuracy.model_dump(), "cost": self.cost,
            "within_budget": self.within_budget, "problems": self.problems,
            "versus_greedy": None if versus is None else {
                **versus.model_dump(), "significant": versus.significant, "verdict": versus.verdict()},
        }


@dataclass(frozen=True)
class Holdout:
    """Every recipe's test row (the searched one first, greedy last)."""

    problems: int
    rows: list[HoldoutRow]

    def problems_for(self, difference: float = 0.10) -> int:
        """Test problems a paired comparison of the searched recipe with greedy needs to see `difference`."""
        versus = self.rows[0].versus_greedy
        disagree = (versus.only_a + versus.only_b) / versus.problems if versus is not None and versus.problems else None
        return problems_to_detect(difference, discordance=disagree or None)

    def to_json(self) -> dict[str, Any]:
        return {"problems": self.problems, "baseline": GREEDY, "problems_for_10_points": self.problems_for(),
                "rows": [row.to_json() for row in self.rows]}


def greedy_like(recipe: Recipe) -> Recipe:
    """One greedy answer from the model (and token limit) of `recipe`'s first node."""
    first = recipe.nodes[0]
    alias = recipe.model_of(first)
    if alias is None:
        raise ValueError(f"recipe {recipe.name!r}: its first node names no model to answer greedily with")
    max_tokens = first.params.get("max_tokens")
    params: dict[str, Any] = {"n": 1, "temperature": 0}
    if isinstance(max_tokens, int):
        params["max_tokens"] = max_tokens
    return Recipe.model_validate({
        "name": GREEDY,
        "description": f"one greedy answer from model {alias!r}, the baseline of {recipe.name!r}",
        "models": {alias: recipe.models[alias].model_dump(mode="json", exclude_none=True)},
        "budget": recipe.budget.model_dump(exclude_none=True),
        "seed": recipe.seed,
        "nodes": [{"id": "answer", "technique": "sample", "params": params}],
    })


async def holdout(
    recipes: list[Recipe],
    task: Task,
    objective: Objective,
    limit: int,
    *,
    greedy: Recipe,
    cache: GenerationCache | None,
    concurrency: int = 32,
) -> Holdout | None:
    """Run each recipe and `greedy` on the first `limit` test problems; None when the task has none."""
    problems = task.problems("test", limit)
    if not problems:
        return None
    measured = []
    for recipe in [*recipes, greedy]:
        run = await arun(recipe, task, problems=problems, split="test", cache=cache if cache is not None else False,
                         concurrency=concurrency)
        measured.append((recipe, [float(r.correct) for r in run.results], objective.cost_of(run.summary)))
    baseline = measured[-1][1]
    rows = []
    for index, (recipe, correct, cost) in enumerate(measured):
        versus = paired_difference(correct, baseline) if index < len(measured) - 1 else None
        oracle = tuple(str(use) for use in recipe.oracle_uses)
        rows.append(HoldoutRow(recipe.name, mean_interval(correct), cost, objective.feasible(cost), len(problems), versus, oracle))
    return Holdout(len(problems), rows)
