"""A scaling curve's outputs: a CSV table, a terminal table, and a plot of the figures against compute.

The recipe's accuracy at each n carries its 95% bootstrap interval over problems
everywhere: `acc` in the table, `accuracy_low`/`accuracy_high` in the CSV, a
band around the accuracy curve in the plot.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from rich.table import Table

from orchestra.oracle import ORACLE_NOTE, marked
from orchestra.report import accuracy_text
from orchestra.scaling.sweep import ScaleResult

#: CSV columns, in order (the fields of ScaleRow but its folder, the accuracy's interval as its two ends),
#: then `oracle`: where the recipe chooses with an oracle scorer (node.param=scorer; empty: nowhere).
CSV_COLUMNS = (
    "n",
    "problems",
    "pass_at_k",
    "majority_at_k",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "coverage",
    "tokens_per_problem",
    "flops_per_problem",
    "tokens_per_correct",
    "generated",
    "replayed",
    "errors",
    "cut_short",
    "oracle",
)


def write_csv(result: ScaleResult, path: str | Path) -> Path:
    """One line per sample count; empty cells where a figure does not exist."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in result.rows:
            ci = row.accuracy_ci
            values = {
                **row.model_dump(),
                "accuracy_low": ci.low if ci else None,
                "accuracy_high": ci.high if ci else None,
                "oracle": " ".join(result.oracle) or None,
            }
            writer.writerow(["" if values[name] is None else values[name] for name in CSV_COLUMNS])
    return path


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _tokens(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def _wrap(text: str, width: int) -> str:
    """Wrap at spaces and after a task spec's `?` and `&`: specs run long and hold no spaces."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[ ?&])", text):
        if line and len(line) + len(piece) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    return "\n".join(lines + [line.rstrip()])


def scale_table(result: ScaleResult) -> Table:
    """The curve as a rich table, one row per sample count."""
    table = Table(
        title=f"{marked(result.recipe, result.oracle)} · {result.task} · {result.split} · {result.problems} problems",
        header_style="bold",
        caption=(
            "pass@n: unbiased, over the pool · maj@n: majority of n, averaged over n-subsets of the pool · "
            "acc/cover: the recipe at n, acc exactly right [95% CI, bootstrap over problems] · "
            "generated: samples not replayed from the cache"
            + (f" · {ORACLE_NOTE}" if result.oracle else "")
        ),
    )
    for column in ("n", "pass@n", "maj@n", "acc", "cover", "tok/prob", "FLOPs/prob", "tok/correct", "generated", "err", "cut"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rows:
        table.add_row(
            str(row.n),
            _share(row.pass_at_k),
            _share(row.majority_at_k),
            accuracy_text(row.accuracy, row.accuracy_ci),
            _share(row.coverage),
            f"{row.tokens_per_problem:.0f}",
            _flops(row.flops_per_problem),
            "-" if row.tokens_per_correct is None else f"{row.tokens_per_correct:.0f}",
            str(row.generated),
            str(row.errors),
            str(row.cut_short),
        )
    return table


def plot_curves(result: ScaleResult, path: str | Path) -> Path:
    """Accuracy (with its 95% CI band), pass@n and majority@n against tokens and FLOPs per problem (log2 x axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, PercentFormatter

    path = Path(path)
    rows = result.rows
    series = [
        ("pass@n (coverage, unbiased)", [r.pass_at_k for r in rows], "o-", "tab:green"),
        ("majority@n", [r.majority_at_k for r in rows], "s-", "tab:orange"),
        (f"{marked(result.recipe, result.oracle)} accuracy (first n samples)", [r.accuracy for r in rows], "D-", "tab:blue"),
    ]
    axes_spec = [
        ("tokens per problem (prompt + completion)", [r.tokens_per_problem for r in rows], _tokens),
        ("FLOPs per problem", [r.flops_per_problem for r in rows], _flops),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (label, xs, fmt) in zip(axes, axes_spec):
        for name, ys, style, color in series:
            points = [(x, y) for x, y in zip(xs, ys) if y is not None and x > 0]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, label=name, color=color, markersize=5)
        band = [(x, row.accuracy_ci) for x, row in zip(xs, rows) if x > 0 and row.accuracy_ci is not None]
        if band:
            ax.fill_between([x for x, _ in band], [ci.low for _, ci in band], [ci.high for _, ci in band],
                            color="tab:blue", alpha=0.15, linewidth=0, label="accuracy 95% CI")
        for row, x in zip(rows, xs):
            if x > 0:
                top = max(y for y in (row.pass_at_k, row.majority_at_k, row.accuracy) if y is not None)
                ax.annotate(f"n={row.n}", (x, top), textcoords="offset points", xytext=(0, 7), ha="center",
                            fontsize=8, color="dimgray")
        ax.set_xscale("log", base=2)
        ticks = sorted({x for x in xs if x > 0})
        ax.set_xticks(ticks, [fmt(x) for x in ticks], fontsize=8)  # a tick per sample count, in plain units
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.08)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("share of problems")
    handles, labels = axes[0].get_legend_handles_labels()
    # Below the axes, not inside: low curves (HumanEval) and high ones (easy sums) would both hide behind it.
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    title = f"{marked(result.recipe, result.oracle)} on {result.task} ({result.split}, {result.problems} problems)"
    figure.suptitle(_wrap(title, 110), fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
