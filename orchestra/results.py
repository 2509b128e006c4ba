"""Typed results of a run: one `ProblemResult` per problem, and their summary.

Accuracy is exact (a problem is right when its score is at least 1) and comes
with its 95% bootstrap interval over problems, so a summary says how far its
figure can be trusted; a task's partial credit is kept beside it, never in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.metrics import accuracy, cost_per_correct, coverage, is_correct, partial_credit
from orchestra.significance import Interval, mean_interval
from orchestra.usage import Usage

Status = Literal["ok", "budget", "error"]


class ProblemResult(BaseModel):
    """How one problem went: the answer, whether it was right, and what it cost.

    `status` is "budget" when a limit refused a call before the output node was
    reached (`cut_short` says which limit), "error" when a node failed.
    `coverage` is whether any candidate generated anywhere in the DAG was
    correct: the ceiling a perfect selector would reach. `score` is the task's
    raw score (it may be partial credit); `correct` is whether it is exactly right.
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
    finish_reason: str | None = Field(
        default=None, description="Why the output's text ended (\"length\": a token limit cut it); None without an output."
    )
    error: str | None = None
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return is_correct(self.score)


class RunSummary(BaseModel):
    """Aggregates over the problems of a run, plus where the run's time went.

    `accuracy` is the share of problems exactly right and `accuracy_ci` its
    95% percentile-bootstrap interval over problems (None for no problems);
    `partial_credit` is the mean score, which differs from accuracy only on
    tasks that give partial credit. Fields added later have defaults, so an
    older summary.json still reads.
    """

    model_config = ConfigDict(extra="forbid")

    recipe: str
    oracle: list[str] = Field(
        default_factory=list,
        description="Where the recipe chooses with an oracle scorer, as node.param=scorer (empty: nowhere); "
        "tables mark such a run `(oracle)`.",
    )
    task: str | None
    split: str | None
    problems: int
    resumed: int = Field(default=0, description="Problems whose results came from an earlier, interrupted run.")
    complete: bool = Field(
        description="Every problem has its result: none failed (a rerun into the folder retries failed ones) and the run was not interrupted."
    )
    accuracy: float = Field(description="Share of problems exactly right (score >= 1).")
    accuracy_ci: Interval | None = Field(
        default=None, description="95% percentile-bootstrap interval of accuracy over problems (None for no problems)."
    )
    partial_credit: float | None = Field(
        default=None, description="Mean score, partial credit counted as its fraction (None in older summaries)."
    )
    coverage: float
    errors: int
    cut_short: int
    usage: Usage
    usage_by_node: dict[str, Usage] = Field(default_factory=dict)
    usage_by_model: dict[str, Usage] = Field(default_factory=dict)
    tokens_per_problem: float
    flops_per_problem: float
    tokens_per_correct: float | None = Field(
        default=None, description="Tokens spent per exactly right answer (None when nothing was right)."
    )
    flops_per_correct: float | None = Field(
        default=None, description="FLOPs spent per exactly right answer (None when nothing was right)."
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
        oracle: Sequence[object] = (),
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
        right = sum(r.correct for r in results)
        scores = [r.score for r in results]
        return cls(
            recipe=recipe,
            oracle=[str(use) for use in oracle],
            task=task,
            split=split,
            problems=count,
            resumed=resumed,
            complete=complete,
            accuracy=accuracy(scores),
            accuracy_ci=mean_interval([float(r.correct) for r in results]) if results else None,
            partial_credit=partial_credit(scores),
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
