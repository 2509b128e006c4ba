"""What a finished search leaves behind: best.yaml, trials.csv, pareto.png, summary.json, replay figures.

Each trial carries its measurements as optuna user attributes (accuracy, cost,
per-problem outcomes, samples generated and replayed, wall seconds, the
recipe's YAML), and a race its outcomes as study attributes, so everything
here is read back from the study alone: any worker, or a later
`orchestra search` on the same storage, writes the same files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import yaml

from orchestra.recipe import Recipe, recipe_from_dict
from orchestra.search.objectives import Objective


def measured_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with their own measurements (a duplicate repeats its twin's)."""
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "accuracy" in t.user_attrs
    ]


def best_trial(study: optuna.Study, objective: Objective) -> FrozenTrial | None:
    """Most accurate feasible complete trial; ties go to the cheaper, then the earlier one.

    A point estimate, for the progress bar while trials run; the winner is chosen
    with significance by `orchestra.search.winner`.
    """
    feasible = [t for t in measured_trials(study) if objective.feasible(t.user_attrs["cost"])]
    if not feasible:
        return None
    return min(feasible, key=lambda t: (-t.user_attrs["accuracy"], t.user_attrs["cost"], t.number))


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials no other trial beats on accuracy and cost at once (accuracy up, cost down), cheapest first."""
    points = sorted(trials, key=lambda t: (t.user_attrs["cost"], -t.user_attrs["accuracy"], t.number))
    front: list[FrozenTrial] = []
    best = -1.0
    for t in points:
        if t.user_attrs["accuracy"] > best:
            front.append(t)
            best = t.user_attrs["accuracy"]
    return front


def best_recipe(trial: FrozenTrial) -> Recipe:
    recipe = recipe_from_dict(yaml.safe_load(trial.user_attrs["recipe"]))
    return recipe.model_copy(update={"description": f"{recipe.description} (trial {trial.number})"})


def write_best(trial: FrozenTrial, path: Path) -> Path:
    path.write_text(best_recipe(trial).to_yaml())
    return path


def write_summary(path: Path, **sections: Any) -> Path:
    """summary.json: the search's settings, its winner (rule, ties, dev interval) and the test comparison."""
    path.write_text(json.dumps(sections, indent=2) + "\n")
    return path


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    trials = study.get_trials(deepcopy=False)
    params = sorted({name for t in trials for name in t.params})
    attrs = ["accuracy", "cost", "feasible", "problems", "samples_generated", "samples_replayed", "wall_seconds", "errors", "duplicate_of", "structure", "oracle"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", *attrs, *params])
        for t in trials:
            writer.writerow(
                [t.number, t.state.name, *(t.user_attrs.get(a, "") for a in attrs), *(t.params.get(p, "") for p in params)]
            )
    return path


def plot_pareto(study: optuna.Study, objective: Objective, path: Path, winner: int | None = None) -> Path:
    """Cost against dev accuracy of every trial, the Pareto front, and the winner (trial number) starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = measured_trials(study)
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if "cost" in t.user_attrs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if pruned:
        ax.scatter([t.user_attrs["cost"] for t in pruned], [t.user_attrs["accuracy"] for t in pruned],
                   marker="x", color="0.7", label="pruned (partial dev)")
    feasible = [t for t in trials if objective.feasible(t.user_attrs["cost"])]
    over = [t for t in trials if not objective.feasible(t.user_attrs["cost"])]
    if over:
        ax.scatter([t.user_attrs["cost"] for t in over], [t.user_attrs["accuracy"] for t in over],
                   color="0.55", label="over budget")
    if feasible:
        ax.scatter([t.user_attrs["cost"] for t in feasible], [t.user_attrs["accuracy"] for t in feasible],
                   color="tab:blue", label="trials")
    front = pareto_front(trials)
    if front:
        ax.step([t.user_attrs["cost"] for t in front], [t.user_attrs["accuracy"] for t in front],
                where="post", color="tab:orange", label="Pareto front")
    best = next((t for t in trials if t.number == winner), None)
    if best is not None:
        ax.scatter([best.user_attrs["cost"]], [best.user_attrs["accuracy"]], marker="*", s=250,
                   color="tab:red", zorder=5, label=f"winner (trial {best.number})")
    if objective.budget is not None:
        ax.axvline(objective.budget, color="tab:red", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(f"{objective.cost} per problem (dev)")
    ax.set_ylabel("accuracy (dev)")
    ax.set_title(f"{study.study_name}: {len(trials)} complete trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ReplaySummary:
    """How much cheaper trials that replayed their generations were than trials that generated."""

    fresh_trials: int
    replayed_trials: int
    fresh_seconds_per_problem: float | None
    replayed_seconds_per_problem: float | None
    samples_generated: int
    samples_replayed: int

    @property
    def speedup(self) -> float | None:
        if not self.fresh_seconds_per_problem or not self.replayed_seconds_per_problem:
            return None
        return self.fresh_seconds_per_problem / self.replayed_seconds_per_problem

    def describe(self) -> str:
        if self.fresh_trials and not self.replayed_trials and not self.samples_generated and not self.samples_replayed:
            return (f"no replay (no cache): every trial generated its samples, "
                    f"{self.fresh_seconds_per_problem:.2f} s/problem ({self.fresh_trials} trials)")
        total = self.samples_generated + self.samples_replayed
        share = f"{self.samples_replayed / total:.0%}" if total else "-"
        line = f"samples: {self.samples_generated} generated, {self.samples_replayed} replayed ({share} replayed)"
        if self.fresh_seconds_per_problem is not None:
            line += f"; trials that generated: {self.fresh_seconds_per_problem:.2f} s/problem ({self.fresh_trials})"
        if self.replayed_seconds_per_problem is not None:
            line += f"; trials that only replayed: {self.replayed_seconds_per_problem:.2f} s/problem ({self.replayed_trials})"
        if self.speedup is not None:
            line += f"; replay is {self.speedup:.1f}x cheaper in wall time"
        return line


def replay_summary(study: optuna.Study) -> ReplaySummary:
    ran = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.user_attrs.get("problems") and "duplicate_of" not in t.user_attrs
    ]
    fresh = [t for t in ran if t.user_attrs.get("samples_generated") != 0]  # None: run without a cache
    replayed = [t for t in ran if t.user_attrs.get("samples_generated") == 0]

    def per_problem(group: list[FrozenTrial]) -> float | None:
        problems = sum(t.user_attrs["problems"] for t in group)
        return sum(t.user_attrs["wall_seconds"] for t in group) / problems if problems else None

    return ReplaySummary(
        fresh_trials=len(fresh),
        replayed_trials=len(replayed),
        fresh_seconds_per_problem=per_problem(fresh),
        replayed_seconds_per_problem=per_problem(replayed),
        samples_generated=sum(t.user_attrs.get("samples_generated") or 0 for t in ran),
        samples_replayed=sum(t.user_attrs.get("samples_replayed") or 0 for t in ran),
    )


def trials_to_best(study: optuna.Study) -> tuple[int, int] | None:
    """(trials, evaluations) run until the first trial reaching the best dev accuracy seen.

    Evaluations leave out trials that repeated an earlier trial's parameters: those
    reuse its measurement and cost nothing, the way Archon counts evaluations.
    """
    trials = sorted(measured_trials(study), key=lambda t: t.number)
    if not trials:
        return None
    top = max(t.user_attrs["accuracy"] for t in trials)
    first = next(t.number for t in trials if t.user_attrs["accuracy"] == top)
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)) if t.number <= first]
    return len(finished), sum("duplicate_of" not in t.user_attrs for t in finished)
