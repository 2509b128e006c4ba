"""Typed results of a run: one `ProblemResult` per problem, and their summary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.metrics import accuracy, cost_per_correct, coverage
from orchestra.usage import Usage

Status = Literal["ok", "budget", "error"]


class ProblemResult(BaseModel):
    """How one problem went: the answer, whether it was right, and what it cost.

    `status` is "budget" when a limit refused a call before the output node was
    reached (`cut_short` says which limit), "error" when a node failed.
    `coverage` is whether any candidate generated anywhere in the DAG was
    correct: the ceiling a perfect selector would reach.
    """

    model_config = ConfigDict(extra="forbid")

    problem_id: str
    status: Status
    answer: str | None = None
    text: str | None = None
    reference: str | None = None
    score: float = 0.0
    coverage: bool = False
    output_candidates: int = 0
    usage: Usage = Field(default_factory=Usage)
    usage_by_node: dict[str, Usage] = Field(default_factory=dict)
    usage_by_model: dict[str, Usage] = Field(default_factory=dict)
    shrunk_calls: int = 0
    cut_short: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


class RunSummary(BaseModel):
    """Aggregates over the problems of a run, plus where the run's time went."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    task: str | None
    split: str | None
    problems: int
    resumed: int = Field(default=0, description="Problems whose results came from an earlier, interrupted run.")
    complete: bool
    accuracy: float
    coverage: float
    errors: int
    cut_short: int
    usage: Usage
    usage_by_node: dict[str, Usage] = Field(default_factory=dict)
    usage_by_model: dict[str, Usage] = Field(default_factory=dict)
    tokens_per_problem: float
    flops_per_problem: float
    tokens_per_correct: float | None = Field(
        default=None, description="Tokens spent per correct answer (None when nothing was right)."
    )
    flops_per_correct: float | None = Field(
        default=None, description="FLOPs spent per correct answer (None when nothing was right)."
    )
    seconds_per_problem: float
    wall_seconds: float
    model_seconds: float
    overhead_share: float | None = Field(
        description="Share of wall time when no model computation ran (engine, tasks, I/O)."
    )

    @classmethod
    def of(
        cls,
        results: list[ProblemResult],
        *,
        recipe: str,
        task: str | None,
        split: str | None,
        complete: bool,
        wall_seconds: float,
        model_seconds: float,
        resumed: int = 0,
    ) -> RunSummary:
        count = len(results)
        usage = sum((r.usage for r in results), Usage())
        per = 1 / count if count else 0.0
        by_node: dict[str, Usage] = {}
        by_model: dict[str, Usage] = {}
        for r in results:
            for name, spent in r.usage_by_node.items():
                by_node[name] = by_node.get(name, Usage()) + spent
            for name, spent in r.usage_by_model.items():
                by_model[name] = by_model.get(name, Usage()) + spent
        ran = count - resumed
        right = sum(r.score for r in results)
        return cls(
            recipe=recipe,
            task=task,
            split=split,
            problems=count,
            resumed=resumed,
            complete=complete,
            accuracy=accuracy(r.score for r in results),
            coverage=coverage(r.coverage for r in results),
            errors=sum(r.status == "error" for r in results),
            cut_short=sum(r.status == "budget" for r in results),
            usage=usage,
            usage_by_node=by_node,
            usage_by_model=by_model,
            tokens_per_problem=usage.total_tokens * per,
            flops_per_problem=usage.flops * per,
            tokens_per_correct=cost_per_correct(usage.total_tokens, right),
            flops_per_correct=cost_per_correct(usage.flops, right),
            seconds_per_problem=wall_seconds / ran if ran else 0.0,  # this session's problems only
            wall_seconds=wall_seconds,
            model_seconds=model_seconds,
            overhead_share=max(0.0, 1 - model_seconds / wall_seconds) if wall_seconds > 0 and model_seconds > 0 else None,
        )


class RunResult(BaseModel):
    """What `orchestra.run` returns: every problem's result, in problem order, and the summary."""

    model_config = ConfigDict(extra="forbid")

    results: list[ProblemResult]
    summary: RunSummary
    out: str | None = None

    @property
    def accuracy(self) -> float:
        return self.summary.accuracy
