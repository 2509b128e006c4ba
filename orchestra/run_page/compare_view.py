"""What the page shows of a `run --compare` folder: each recipe's run, the paired differences, and
per problem whether the recipes disagree (one right, another wrong)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestra.comparison import Comparison
from orchestra.run_page.run_view import RunView, TaskLookup, read_run


@dataclass
class CompareView:
    comparison: Comparison
    runs: list[RunView]
    problem_ids: list[str]  # in the first recipe's order, then any only later recipes ran
    disagree: set[str]


def read_compare(folder: Path) -> CompareView:
    comparison = Comparison.model_validate_json((folder / "comparison.json").read_text())
    tasks = TaskLookup()
    runs = [read_run(folder / r.recipe, tasks) for r in comparison.recipes if (folder / r.recipe / "run.json").is_file()]
    ids: list[str] = []
    verdicts: dict[str, set[bool]] = {}
    for run in runs:
        for problem in run.problems:
            if problem.id not in verdicts:
                ids.append(problem.id)
            verdicts.setdefault(problem.id, set()).add(problem.correct)
    disagree = {pid for pid, seen in verdicts.items() if len(seen) > 1}
    return CompareView(comparison=comparison, runs=runs, problem_ids=ids, disagree=disagree)
