"""What the page shows of a `search` folder: every trial, and dev accuracy against cost with the Pareto front.

Read from trials.csv (one row per trial, written by search/outputs.py) and
summary.json (settings, winner, test comparison), so no study database is opened.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from orchestra.run_page.svg_charts import Point, scatter_chart


@dataclass
class SearchView:
    columns: list[str]
    trials: list[dict[str, str]]
    front: list[int]  # trial numbers on the Pareto front
    winner: int | None
    summary: dict[str, Any]
    chart: Markup | None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def pareto_numbers(measured: list[tuple[int, float, float]]) -> list[int]:
    """Trials (number, cost, accuracy) no other beats on accuracy and cost at once, cheapest first."""
    front, best = [], -1.0
    for number, _, accuracy in sorted(measured, key=lambda t: (t[1], -t[2], t[0])):
        if accuracy > best:
            front.append(number)
            best = accuracy
    return front


def read_search(folder: Path) -> SearchView:
    trials: list[dict[str, str]] = []
    columns: list[str] = []
    if (folder / "trials.csv").is_file():
        with (folder / "trials.csv").open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            trials = list(reader)
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except ValueError:
            summary = {}
    winner = (summary.get("winner") or {}).get("trial") if isinstance(summary.get("winner"), dict) else None
    measured = []
    points = []
    for t in trials:
        cost, accuracy = _number(t.get("cost")), _number(t.get("accuracy"))
        if cost is None or accuracy is None:
            continue
        number = int(t["number"])
        if t.get("state") == "COMPLETE":
            measured.append((number, cost, accuracy))
        points.append((number, cost, accuracy, t.get("state", "")))
    front = pareto_numbers(measured)
    chart = None
    if points:
        dots = [
            Point(cost, accuracy, f"trial {number}: accuracy {accuracy:.1%}, cost {cost:.4g}",
                  "winner" if number == winner else "front" if number in front else
                  "pruned" if state != "COMPLETE" else "trial")
            for number, cost, accuracy, state in points
        ]
        line = [Point(c, a) for n, c, a in measured if n in front]
        chart = scatter_chart(dots, line, x_label="cost per problem (dev)", y_label="accuracy (dev)")
    return SearchView(columns=columns, trials=trials, front=front, winner=winner, summary=summary, chart=chart)
