"""Several recipes run on the same problems, the first against each other: what `run --compare` reports.

Two accuracies on 20 problems can differ by 10 points by luck alone, so a
comparison is more than the two figures: for every recipe after the first, the
paired difference of the first from it over the problems both ran (`orchestra
run quickstart.yaml --compare greedy.yaml` reports quickstart − greedy) (exact correctness,
paired bootstrap, `orchestra.significance`), whether its interval excludes 0,
and how many problems a 10-point difference would need to be seen at the rate
the two recipes disagree. `orchestra run --compare` prints it and writes it to
`comparison.json` in the run folder, so nothing printed is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from orchestra.results import RunResult
from orchestra.significance import Difference, Interval, paired_difference, problems_to_detect

#: The difference in accuracy a comparison says it needs how many problems to see.
DETECTABLE = 0.10


class RecipeAccuracy(BaseModel):
    """One compared recipe's exact accuracy and its 95% interval over its problems."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    oracle: list[str] = Field(
        default_factory=list, description="Where the recipe chooses with an oracle scorer (node.param=scorer)."
    )
    problems: int
    accuracy: Interval | None = Field(description="None when the recipe ran no problems.")


class PairedComparison(BaseModel):
    """`recipe` against `baseline` on the problems both ran."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    baseline: str
    difference: Difference = Field(description="Accuracy of recipe minus baseline, paired bootstrap interval.")
    discordance: float = Field(description="Share of the shared problems exactly one of the two got right.")
    problems_to_detect: int = Field(description="Problems a difference of `detectable` needs at this discordance.")


class Comparison(BaseModel):
    """Every recipe's accuracy, and the first against each one after it."""

    model_config = ConfigDict(extra="forbid")

    task: str | None
    split: str | None
    problems: int
    detectable: float = DETECTABLE
    recipes: list[RecipeAccuracy]
    differences: list[PairedComparison]


def _versus(run: RunResult, baseline: RunResult, detectable: float) -> PairedComparison:
    right = {r.problem_id: float(r.correct) for r in run.results}
    shared = [r for r in baseline.results if r.problem_id in right]
    if not shared:
        raise ValueError(f"{run.summary.recipe} and {baseline.summary.recipe} share no problem to compare on")
    difference = paired_difference([right[r.problem_id] for r in shared], [float(r.correct) for r in shared])
    discordance = (difference.only_a + difference.only_b) / difference.problems
    return PairedComparison(
        recipe=run.summary.recipe,
        baseline=baseline.summary.recipe,
        difference=difference,
        discordance=discordance,
        problems_to_detect=problems_to_detect(detectable, discordance=discordance),
    )


def compare(runs: Sequence[RunResult], *, detectable: float = DETECTABLE) -> Comparison:
    """Each run's accuracy interval, and the first run against each run after it (paired)."""
    if not runs:
        raise ValueError("nothing to compare")
    base = runs[0]
    return Comparison(
        task=base.summary.task,
        split=base.summary.split,
        problems=base.summary.problems,
        detectable=detectable,
        recipes=[
            RecipeAccuracy(
                recipe=r.summary.recipe, oracle=r.summary.oracle, problems=r.summary.problems,
                accuracy=r.summary.accuracy_ci,
            )
            for r in runs
        ],
        differences=[_versus(base, run, detectable) for run in runs[1:]],
    )
