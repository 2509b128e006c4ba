"""A run's folder: results and traces written as they happen, so nothing is lost.

    run.json        what ran: recipe (and its fingerprint), task, split
    results.jsonl   one line per finished problem
    trace.jsonl     one line per node execution: inputs, outputs, usage, time
    summary.json    aggregates, rewritten at the end (and on interruption)

Rerunning into the same folder resumes: problems already in results.jsonl
(finished, or cut short by the budget) are skipped; failed ones are retried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunSummary


class RunFolderMismatch(Exception):
    """The folder holds a run of a different recipe or task; resuming would mix them."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.results_path = self.path / "results.jsonl"
        self.trace_path = self.path / "trace.jsonl"
        self.summary_path = self.path / "summary.json"
        self.meta_path = self.path / "run.json"

    def start(self, recipe: Recipe, task: str | None, split: str | None) -> None:
        """Record what runs here, or check that it is what ran here before."""
        meta = {
            "recipe": recipe.name,
            "fingerprint": recipe.fingerprint(),
            "task": task,
            "split": split,
            "definition": recipe.model_dump(mode="json"),
        }
        if self.meta_path.exists():
            before = json.loads(self.meta_path.read_text())
            for key in ("fingerprint", "task", "split"):
                if before.get(key) != meta[key]:
                    raise RunFolderMismatch(
                        f"{self.path} holds a run with a different {key} "
                        f"({before.get(key)!r} vs {meta[key]!r}); use another --out folder"
                    )
            return
        self.meta_path.write_text(json.dumps(meta, indent=2))

    def finished(self) -> dict[str, ProblemResult]:
        """Results of problems that need no rerun (status ok or budget), by problem id."""
        done: dict[str, ProblemResult] = {}
        if not self.results_path.exists():
            return done
        for line in self.results_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                result = ProblemResult.model_validate_json(line)
            except ValueError:
                continue  # a line torn by a crash mid-write: that problem simply reruns
            if result.status != "error":
                done[result.problem_id] = result
        return done

    def add_result(self, result: ProblemResult) -> None:
        self._append(self.results_path, result.model_dump(mode="json"))

    def add_trace(self, record: dict[str, Any]) -> None:
        self._append(self.trace_path, record)

    def write_summary(self, summary: RunSummary) -> None:
        staging = self.summary_path.with_suffix(".tmp")
        staging.write_text(summary.model_dump_json(indent=2))
        os.replace(staging, self.summary_path)

    @staticmethod
    def _append(path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
