"""What a search optimizes: accuracy, a cost, and how the two are traded.

Three modes, chosen by the user:

- accuracy alone (no budget);
- accuracy subject to a budget: mean cost per problem <= budget, handled as an
  optuna constraint (TPE and NSGA-II model feasibility; infeasible trials still
  inform the sampler but never win);
- accuracy and cost together (`pareto`): two objectives, the result is the
  Pareto front; a budget, if given, picks the recipe written as best.yaml.

Costs are the logical `Usage` counters, which are the same whether a sample was
generated or replayed from the cache, so a replayed trial costs what the recipe
would cost when run for real. `seconds` is the exception: it is wall time, and
only means something when the search does not replay (the search turns the
cache off for it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.results import RunSummary
from orchestra.usage import Usage

CostName = Literal["completion_tokens", "total_tokens", "prompt_tokens", "flops", "calls", "seconds"]
COST_NAMES: tuple[str, ...] = CostName.__args__  # type: ignore[attr-defined]


class Objective(BaseModel):
    """Accuracy, one cost per problem, and an optional budget on that cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cost: CostName = "completion_tokens"
    budget: float | None = Field(default=None, gt=0, description="Most mean cost per problem a winning recipe may spend.")
    pareto: bool = Field(default=False, description="Two objectives (accuracy up, cost down) instead of one.")

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.pareto else ["maximize"]

    @property
    def replays(self) -> bool:
        """Whether trials may replay generations: not when the cost is wall time."""
        return self.cost != "seconds"

    def spent(self, usage: Usage) -> float:
        """This cost measure of what a problem (or a run) spent."""
        return float(usage.total_tokens if self.cost == "total_tokens" else getattr(usage, self.cost))

    def cost_of(self, summary: RunSummary) -> float:
        """Mean cost per problem of a run."""
        if not summary.problems:
            return 0.0
        return self.spent(summary.usage) / summary.problems

    def values(self, accuracy: float, cost: float) -> list[float]:
        return [accuracy, cost] if self.pareto else [accuracy]

    def violation(self, cost: float) -> float:
        """optuna's constraint value: <= 0 is feasible (0 when there is no budget)."""
        return cost - self.budget if self.budget is not None else 0.0

    def feasible(self, cost: float) -> bool:
        return self.budget is None or cost <= self.budget

    def describe(self) -> str:
        what = f"accuracy and {self.cost}/problem (Pareto front)" if self.pareto else "accuracy"
        if self.budget is not None:
            what += f", {self.cost}/problem <= {self.budget:g}"
        return what
