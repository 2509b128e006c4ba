"""What the page shows of one run folder: its summary, recipe, and every problem's candidates.

Read from the files the run wrote (run.json, results.jsonl, trace.jsonl,
summary.json). The question text is not in the folder, so it comes from the
task when the task still loads; a candidate is marked right or wrong by
comparing its normalised answer with the reference (no scorer runs: code tasks
stay unmarked rather than executing anything). A node's candidates are capped
at `CANDIDATES_SHOWN`, so a 200-problem x 16-sample run stays a few MB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from markupsafe import Markup

from orchestra.results import ProblemResult, RunSummary
from orchestra.run_page.step_tree import STEPWISE_TECHNIQUES, drawn_from_events, step_tree_svg
from orchestra.significance import Interval, mean_interval
from orchestra.tasks import Task, load_task

#: Candidates shown per node and problem; the rest are counted ("12 more").
CANDIDATES_SHOWN = 16
#: Characters of a candidate's text shown; the rest is cut with a mark.
TEXT_SHOWN = 4000


@dataclass
class CandidateView:
    id: str
    text: str
    answer: str | None
    scores: dict[str, float]
    parents: list[str]
    right: bool | None  # None: cannot be told without running a scorer


@dataclass
class NodeView:
    node: str
    technique: str
    candidates: list[CandidateView]
    hidden: int  # candidates beyond CANDIDATES_SHOWN
    error: str | None
    tree: Markup | None = None  # step-wise searches: their tree as inline SVG
    tree_from_events: bool = False  # drawn from the search's recorded events (else from its answers)


@dataclass
class ProblemView:
    id: str
    status: str
    correct: bool
    question: str | None
    reference: str | None
    answer: str | None
    score: float
    coverage: bool
    error: str | None
    nodes: list[NodeView] = field(default_factory=list)


@dataclass
class CostRow:
    node: str
    calls: int
    tokens: int
    flops: float
    seconds: float


@dataclass
class RunView:
    name: str
    folder: Path
    summary: RunSummary | None
    meta: dict[str, Any]
    recipe_yaml: str
    cost_by_node: list[CostRow]
    problems: list[ProblemView]
    accuracy: Interval | None  # over the problems finished so far (a run still going has no summary yet)
    coverage: Interval | None

    @property
    def by_id(self) -> dict[str, ProblemView]:
        return {p.id: p for p in self.problems}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a JSONL log (a torn or unreadable line, e.g. mid-write, is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class TaskLookup:
    """Tasks loaded once per spec, for questions and answer normalisation; None where one fails to load."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], tuple[Task | None, dict[str, str]]] = {}

    def get(self, spec: str | None, split: str | None) -> tuple[Task | None, dict[str, str]]:
        if not spec:
            return None, {}
        key = (spec, split or "test")
        if key not in self._tasks:
            try:
                task = load_task(spec)
                questions = {p.id: p.prompt for p in task.problems(key[1])}  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001  (any task's failure: the page still shows everything else)
                task, questions = None, {}
            self._tasks[key] = (task, questions)
        return self._tasks[key]


def _is_right(task: Task | None, answer: str | None, reference: str | None) -> bool | None:
    if reference is None or answer is None:
        return None if reference is None else False
    if task is None:
        return answer.strip() == reference.strip()
    return task.same_answer(reference, answer)


def _cost_rows(summary: RunSummary | None, results: list[ProblemResult]) -> list[CostRow]:
    if summary is not None:
        by_node = summary.usage_by_node
    else:
        by_node = RunSummary.of(results, recipe="", task=None, split=None, complete=False,
                                wall_seconds=0.0, model_seconds=0.0).usage_by_node
    return [CostRow(name, u.calls, u.total_tokens, u.flops, u.seconds) for name, u in by_node.items()]


def read_run(folder: Path, tasks: TaskLookup | None = None) -> RunView:
    """The view of one run folder; a run still going shows the problems finished so far."""
    tasks = tasks or TaskLookup()
    meta = json.loads((folder / "run.json").read_text())
    definition = meta.get("definition", {})
    summary = None
    if (folder / "summary.json").is_file():
        try:
            summary = RunSummary.model_validate_json((folder / "summary.json").read_text())
        except ValueError:
            summary = None
    results = []
    for record in _read_jsonl(folder / "results.jsonl"):
        try:
            results.append(ProblemResult.model_validate(record))
        except ValueError:
            continue
    task, questions = tasks.get(meta.get("task"), meta.get("split"))
    traces: dict[str, list[dict[str, Any]]] = {}
    for record in _read_jsonl(folder / "trace.jsonl"):
        traces.setdefault(str(record.get("problem_id")), []).append(record)
    params = {n.get("id"): n.get("params", {}) for n in definition.get("nodes", [])}
    problems = []
    for result in results:
        view = ProblemView(
            id=result.problem_id, status=result.status, correct=result.correct,
            question=questions.get(result.problem_id), reference=result.reference, answer=result.answer,
            score=result.score, coverage=result.coverage, error=result.error,
        )
        for record in traces.get(result.problem_id, []):
            outputs = record.get("outputs") or []
            candidates = [
                CandidateView(
                    id=str(c.get("id", "")), text=_cut(str(c.get("text", ""))), answer=c.get("answer"),
                    scores=dict(c.get("scores") or {}), parents=list(c.get("parents") or []),
                    right=_is_right(task, c.get("answer"), result.reference),
                )
                for c in outputs[:CANDIDATES_SHOWN]
            ]
            node = NodeView(
                node=str(record.get("node")), technique=str(record.get("technique")), candidates=candidates,
                hidden=max(0, len(outputs) - CANDIDATES_SHOWN), error=record.get("error"),
            )
            if node.technique in STEPWISE_TECHNIQUES and outputs:
                delimiter = params.get(node.node, {}).get("delimiter", "\n\n")
                events = record.get("events")
                node.tree = step_tree_svg(outputs, delimiter, partial(_is_right, task, reference=result.reference), events)
                node.tree_from_events = drawn_from_events(events)
            view.nodes.append(node)
        problems.append(view)
    return RunView(
        name=str(meta.get("recipe") or folder.name), folder=folder, summary=summary, meta=meta,
        recipe_yaml=yaml.safe_dump(definition, sort_keys=False, allow_unicode=True),
        cost_by_node=_cost_rows(summary, results), problems=problems,
        accuracy=mean_interval([float(r.correct) for r in results]) if results else None,
        coverage=mean_interval([float(r.coverage) for r in results]) if results else None,
    )


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + f"\n… ({len(text) - TEXT_SHOWN} more characters)"
