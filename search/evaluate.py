"""Scoring one candidate recipe on the dev split: growing subsets, pruning, replay accounting.

A trial runs its recipe on the first `rungs[0]` dev problems, reports the
accuracy to optuna, and goes on to the next rung only if the pruner (successive
halving) keeps it; each rung runs only the problems it adds. Weak recipes thus
stop after a few problems, and the problems they did run were all generated
through the cache, so a later trial with the same generation layer replays them.

Replay is measured, not assumed: the cache's own hit/miss counters say how many
samples the trial generated and how many it replayed. Besides the totals, a
trial keeps each problem's outcome (exactly right or not, and its cost), so
configurations can be compared paired on the same problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestra.cache import GenerationCache
from orchestra.executor import Executor
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunSummary
from orchestra.tasks import Task
from orchestra.search.objectives import Objective
from orchestra.search.outcomes import Outcome, outcomes_of


class Reports(Protocol):
    """The part of `optuna.Trial` pruning needs."""

    def report(self, value: float, step: int) -> None: ...
    def should_prune(self) -> bool: ...


class Pruned(Exception):
    """The pruner stopped this trial; `evaluation` is what it measured up to then."""

    def __init__(self, evaluation: Evaluation):
        super().__init__(f"pruned after {evaluation.problems} problems")
        self.evaluation = evaluation


@dataclass(frozen=True)
class Evaluation:
    """What one trial measured: accuracy is the share of problems exactly right."""

    accuracy: float
    cost: float
    problems: int
    samples_generated: int | None
    samples_replayed: int
    wall_seconds: float
    errors: int
    outcomes: tuple[Outcome, ...] = ()


def rung_sizes(total: int, first: int | None, factor: int) -> list[int]:
    """Problem counts at which a trial reports: first, first*factor, ... up to total (always last)."""
    if total < 1:
        raise ValueError("the dev split has no problems to search on")
    if first is None or first >= total:
        return [total]
    if first < 1 or factor < 2:
        raise ValueError("successive halving needs a first rung of 1+ problems and a factor of 2+")
    sizes = []
    size = first
    while size < total:
        sizes.append(size)
        size *= factor
    return [*sizes, total]


async def evaluate(
    recipe: Recipe,
    task: Task,
    problems: list[Problem],
    objective: Objective,
    *,
    rungs: list[int] | None = None,
    cache: GenerationCache | None = None,
    trial: Reports | None = None,
    concurrency: int = 32,
    on_result: Callable[[ProblemResult], None] | None = None,
) -> Evaluation:
    """Accuracy and cost of `recipe` on `problems`, reporting at each rung; raises Pruned."""
    rungs = rungs or [len(problems)]
    engine = Executor(recipe, task=task, cache=cache, concurrency=concurrency)
    hits, misses = (cache.hits, cache.misses) if cache is not None else (0, 0)
    results: list[ProblemResult] = []
    wall = 0.0
    evaluation = None
    for size in rungs:
        run = await engine.run(problems[len(results):size], split="dev", on_result=on_result)
        results.extend(run.results)
        wall += run.summary.wall_seconds
        summary = RunSummary.of(
            results, recipe=recipe.name, task=task.spec, split="dev", complete=True,
            wall_seconds=wall, model_seconds=0.0, oracle=recipe.oracle_uses,
        )
        outcomes = tuple(outcomes_of(results, objective))
        replayed = cache.hits - hits if cache is not None else 0
        generated = cache.misses - misses if cache is not None else None  # no cache: every sample is fresh, uncounted
        evaluation = Evaluation(
            accuracy=sum(o.correct for o in outcomes) / len(outcomes) if outcomes else 0.0,
            cost=objective.cost_of(summary),
            problems=len(results),
            samples_generated=generated,
            samples_replayed=replayed,
            wall_seconds=wall,
            errors=summary.errors,
            outcomes=outcomes,
        )
        if trial is not None and size < rungs[-1]:
            trial.report(evaluation.accuracy, size)
            if trial.should_prune():
                raise Pruned(evaluation)
    assert evaluation is not None
    return evaluation
