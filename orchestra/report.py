"""Terminal tables and lines for run summaries and comparisons (rich)."""

from __future__ import annotations

from rich.table import Table

from orchestra.comparison import Comparison
from orchestra.oracle import ORACLE_NOTE, marked
from orchestra.results import RunResult
from orchestra.significance import Interval


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def accuracy_text(accuracy: float, interval: Interval | None) -> str:
    """`62.0% [55.1, 68.9]`: a share with its confidence interval (the share alone when there is none)."""
    if interval is None:
        return f"{accuracy:.1%}"
    return f"{accuracy:.1%} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _shows_partial_credit(runs: list[RunResult]) -> bool:
    return any(
        r.summary.partial_credit is not None and abs(r.summary.partial_credit - r.summary.accuracy) > 1e-12 for r in runs
    )


def results_table(runs: list[RunResult], title: str | None = None) -> Table:
    """One row per run: accuracy with its 95% interval, coverage, cost per problem, failures.

    `acc` counts exactly right answers; `partial` (shown only when a task gave
    partial credit) is the mean score. `cover` is the share of problems where
    some candidate was right (what a perfect selector would score); `replayed`
    counts samples served by the generation cache; `cut` counts problems a
    budget limit stopped early.
    """
    partial = _shows_partial_credit(runs)
    caption = "acc: share exactly right [95% CI, bootstrap over problems]"
    if partial:
        caption += " · partial: mean score with partial credit"
    if any(r.summary.oracle for r in runs):
        caption += f" · {ORACLE_NOTE}"
    table = Table(title=title, header_style="bold", caption=caption)
    for column, justify in [
        ("recipe", "left"),
        ("n", "right"),
        ("acc", "right"),
        *([("partial", "right")] if partial else []),
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
            marked(s.recipe, s.oracle),
            str(s.problems),
            accuracy_text(s.accuracy, s.accuracy_ci),
            *([f"{s.partial_credit:.1%}" if s.partial_credit is not None else "-"] if partial else []),
            f"{s.coverage:.1%}",
            f"{s.tokens_per_problem:.0f}",
            _flops(s.flops_per_problem),
            f"{s.seconds_per_problem:.2f}",
            str(s.usage.cache_hits),
            str(s.cut_short),
            str(s.errors),
        )
    return table


def comparison_lines(comparison: Comparison) -> list[str]:
    """The first recipe against each other: the paired difference, its CI and verdict; then what the table can see.

    `quickstart − greedy: +12.0 pts [+5.0, +20.0], significant · quickstart alone right on 14, greedy
    alone on 2, of 100 problems`, and one line saying how many problems a 10-point difference needs
    at the disagreement rate observed.
    """
    if not comparison.differences:
        return []
    lines = []
    oracle = {r.recipe for r in comparison.recipes if r.oracle}
    for pair in comparison.differences:
        d = pair.difference
        recipe, baseline = marked(pair.recipe, pair.recipe in oracle), marked(pair.baseline, pair.baseline in oracle)
        lines.append(
            f"{recipe} − {baseline}: {d.points()}, {d.verdict()} · "
            f"{pair.recipe} alone right on {d.only_a}, {pair.baseline} alone on {d.only_b}, of {d.problems} problems"
        )
    size = f"a {100 * comparison.detectable:.0f}-point difference"
    if len(comparison.differences) == 1:
        (pair,) = comparison.differences
        needs = (
            f"{size} needs ≈{pair.problems_to_detect} problems to be seen at this disagreement rate "
            f"(the two disagree on {pair.discordance:.0%} of problems)"
        )
    else:
        each = ", ".join(f"≈{p.problems_to_detect} for {p.recipe} vs {p.baseline}" for p in comparison.differences)
        needs = f"problems {size} needs to be seen, at each pair's disagreement rate: {each}"
    if oracle:
        lines.append(ORACLE_NOTE)
    lines.append(f"{needs}; this table has {comparison.problems}")  # last: what bench reports quote
    return lines


def node_table(run: RunResult) -> Table:
    """Where a run's compute went, node by node (summed over its problems)."""
    s = run.summary
    table = Table(title=f"{marked(s.recipe, s.oracle)}: cost by node", header_style="bold", title_justify="left")
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
