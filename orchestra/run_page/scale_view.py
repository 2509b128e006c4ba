"""What the page shows of a `scale` folder: the accuracy curve over n with its band, and the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from orchestra.run_page.svg_charts import Point, curve_chart
from orchestra.scaling.sweep import ScaleResult


@dataclass
class ScaleView:
    result: ScaleResult
    chart: Markup


def read_scale(folder: Path) -> ScaleView:
    result = ScaleResult.model_validate_json((folder / "scale.json").read_text())
    rows = sorted(result.rows, key=lambda r: r.n)
    points = [Point(r.n, r.accuracy, f"n={r.n}: accuracy {r.accuracy:.1%}") for r in rows]
    band = [(r.n, r.accuracy_ci.low, r.accuracy_ci.high) for r in rows if r.accuracy_ci is not None]
    others = {
        "pass@n": [Point(r.n, r.pass_at_k) for r in rows if r.pass_at_k is not None],
        "majority@n": [Point(r.n, r.majority_at_k) for r in rows if r.majority_at_k is not None],
        "coverage": [Point(r.n, r.coverage) for r in rows],
    }
    chart = curve_chart(points, band, x_label="samples n (log scale)", y_label="accuracy", others=others)
    return ScaleView(result=result, chart=chart)
