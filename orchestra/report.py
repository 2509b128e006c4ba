"""Terminal tables for run summaries (rich)."""

from __future__ import annotations

from rich.table import Table

from orchestra.results import RunResult


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def results_table(runs: list[RunResult], title: str | None = None) -> Table:
    """One row per run: accuracy, coverage, cost per problem, failures.

    `cover` is the share of problems where some candidate was right (what a
    perfect selector would score); `replayed` counts samples served by the
    generation cache; `cut` counts problems a budget limit stopped early.
    """
    table = Table(title=title, header_style="bold")
    for column, justify in [
        ("recipe", "left"),
        ("n", "right"),
        ("acc", "right"),
        ("cover", "right"),
        ("tok/prob", "right"),
        ("FLOPs/prob", "right"),
        ("s/prob", "right"),
        ("replayed", "right"),
        ("cut", "right"),
        ("err", "right"),
    ]:
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for run in runs:
        s = run.summary
        table.add_row(
            s.recipe,
            str(s.problems),
            f"{s.accuracy:.1%}",
            f"{s.coverage:.1%}",
            f"{s.tokens_per_problem:.0f}",
            _flops(s.flops_per_problem),
            f"{s.seconds_per_problem:.2f}",
            str(s.usage.cache_hits),
            str(s.cut_short),
            str(s.errors),
        )
    return table


def paired_line(a: RunResult, b: RunResult) -> str:
    """Problem-by-problem comparison of two runs over the same problems."""
    scores_b = {r.problem_id: r.correct for r in b.results}
    both = [(r.correct, scores_b[r.problem_id]) for r in a.results if r.problem_id in scores_b]
    only_a = sum(x and not y for x, y in both)
    only_b = sum(y and not x for x, y in both)
    return (
        f"on {len(both)} shared problems: {a.summary.recipe} alone right on {only_a}, "
        f"{b.summary.recipe} alone right on {only_b}, both right on {sum(x and y for x, y in both)}"
    )


def node_table(run: RunResult) -> Table:
    """Where a run's compute went, node by node (summed over its problems)."""
    s = run.summary
    table = Table(title=f"{s.recipe}: cost by node", header_style="bold", title_justify="left")
    for column in ("node", "calls", "prompt tok", "completion tok", "FLOPs", "share of tokens", "replayed"):
        table.add_column(column, justify="left" if column == "node" else "right", no_wrap=True)
    total = s.usage.total_tokens or 1
    for node, used in s.usage_by_node.items():
        table.add_row(
            node,
            str(used.calls),
            str(used.prompt_tokens),
            str(used.completion_tokens),
            _flops(used.flops),
            f"{used.total_tokens / total:.0%}",
            str(used.cache_hits),
        )
    return table
