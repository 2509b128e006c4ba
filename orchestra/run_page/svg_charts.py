"""Inline SVG drawings of the page: the recipe's DAG, a curve with its confidence band, a scatter with its front.

Hand-drawn in a few lines of SVG rather than through a plotting library: the
page stays one small file, its elements keep classes a test and a stylesheet
can find, and nothing runs in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

_W, _H = 560, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 14, 40


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""
    kind: str = ""  # a CSS class: e.g. "front", "winner", "pruned"


def dag_svg(nodes: Sequence[dict], output: str | None) -> Markup:
    """`svg.dag`: the recipe's nodes in columns by depth, an arrow from each input, the output node marked
    (a recipe that names none answers with its last node)."""
    if output is None and nodes:
        output = str(nodes[-1]["id"])
    inputs = {str(n["id"]): [str(i) for i in n.get("inputs") or []] for n in nodes}
    technique = {str(n["id"]): str(n.get("technique", "")) for n in nodes}
    depth: dict[str, int] = {}

    def depth_of(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            parents = [p for p in inputs.get(node, []) if p in inputs and p not in seen]
            depth[node] = 1 + max((depth_of(p, seen | {node}) for p in parents), default=-1)
        return depth[node]

    columns: dict[int, list[str]] = {}
    for node in inputs:
        columns.setdefault(depth_of(node), []).append(node)
    box_w, box_h, gap_x, gap_y = 150, 40, 50, 16
    where = {node: (10 + d * (box_w + gap_x), 10 + row * (box_h + gap_y))
             for d, column in columns.items() for row, node in enumerate(column)}
    width = 20 + len(columns) * (box_w + gap_x) - gap_x
    height = 20 + max((len(c) for c in columns.values()), default=1) * (box_h + gap_y) - gap_y
    parts = [(f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="recipe DAG">')]
    for node, parents in inputs.items():
        for parent in parents:
            if parent in where:
                (px, py), (nx, ny) = where[parent], where[node]
                head = ny + box_h / 2  # the arrowhead drawn in place: a page holds several DAGs, so no shared marker id
                parts.append(f'<line class="edge" x1="{px + box_w}" y1="{py + box_h / 2}" x2="{nx}" y2="{head}"/>'
                             f'<polygon class="arrow" points="{nx},{head} {nx - 8},{head - 4} {nx - 8},{head + 4}"/>')
    for node, (x, y) in where.items():
        cls = "node output" if node == output else "node"
        parts.append(f'<g class="{cls}"><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6"/>'
                     f'<text x="{x + box_w / 2}" y="{y + 17}" text-anchor="middle" class="id">{escape(node)}</text>'
                     f'<text x="{x + box_w / 2}" y="{y + 32}" text-anchor="middle" class="technique">'
                     f'{escape(technique[node])}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


class _Axes:
    """Maps data to the plot area; log scale on x when asked (sample counts and costs span decades)."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], log_x: bool, y_range: tuple[float, float] | None,
                 pad_x: float = 0.0):
        self.log_x = log_x and all(x > 0 for x in xs)
        fx = [self._fx(x) for x in xs] or [0.0, 1.0]
        self.x0, self.x1 = min(fx), max(fx)
        if self.x0 == self.x1:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        margin = (self.x1 - self.x0) * pad_x  # dots at the ends stay inside the frame
        self.x0, self.x1 = self.x0 - margin, self.x1 + margin
        self.y0, self.y1 = y_range or (min(ys, default=0.0), max(ys, default=1.0))
        if self.y0 == self.y1:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5

    def _fx(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def x(self, value: float) -> float:
        return _LEFT + (self._fx(value) - self.x0) / (self.x1 - self.x0) * (_W - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _TOP + (self.y1 - value) / (self.y1 - self.y0) * (_H - _TOP - _BOTTOM)

    def frame(self, x_label: str, y_label: str, x_ticks: Sequence[float]) -> list[str]:
        parts = [f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{_H - _TOP - _BOTTOM}"/>']
        for i in range(5):
            value = self.y0 + (self.y1 - self.y0) * i / 4
            y = self.y(value)
            parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>'
                         f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
        for value in x_ticks:
            x = self.x(value)
            parts.append(f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{value:.4g}</text>')
        parts.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 6}" text-anchor="middle" class="label">{escape(x_label)}</text>'
                     f'<text x="14" y="{(_TOP + _H - _BOTTOM) / 2}" text-anchor="middle" class="label" '
                     f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2})">{escape(y_label)}</text>')
        return parts


def _open(name: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(name)}">')


def curve_chart(
    points: Sequence[Point], band: Sequence[tuple[float, float, float]], *, x_label: str, y_label: str,
    others: dict[str, Sequence[Point]] | None = None, log_x: bool = True,
) -> Markup:
    """`svg.chart`: a curve through `points`, its interval `band` (x, low, high) shaded, more curves dashed."""
    others = {name: list(line) for name, line in (others or {}).items() if line}
    xs = [p.x for p in points] + [p.x for line in others.values() for p in line]
    ys = [p.y for p in points] + [v for _, lo, hi in band for v in (lo, hi)] + [p.y for line in others.values() for p in line]
    axes = _Axes(xs, ys, log_x, (0.0, max(1.0, max(ys, default=1.0))))
    parts = [_open(y_label), *axes.frame(x_label, y_label, sorted(set(xs)))]
    if band:
        upper = [f"{axes.x(x):.1f},{axes.y(hi):.1f}" for x, _, hi in band]
        lower = [f"{axes.x(x):.1f},{axes.y(lo):.1f}" for x, lo, _ in reversed(band)]
        parts.append(f'<polygon class="band" points="{" ".join(upper + lower)}"><title>95% interval</title></polygon>')
    for index, (name, line) in enumerate(others.items()):
        path = " ".join(f"{axes.x(p.x):.1f},{axes.y(p.y):.1f}" for p in line)
        parts.append(f'<polyline class="other other-{index}" points="{path}"><title>{escape(name)}</title></polyline>')
    if points:
        parts.append(f'<polyline class="curve" points="{" ".join(f"{axes.x(p.x):.1f},{axes.y(p.y):.1f}" for p in points)}"/>')
    for p in points:
        parts.append(f'<circle class="point" cx="{axes.x(p.x):.1f}" cy="{axes.y(p.y):.1f}" r="4">'
                     f'<title>{escape(p.label)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def scatter_chart(points: Sequence[Point], front: Sequence[Point], *, x_label: str, y_label: str,
                  log_x: bool = False) -> Markup:
    """`svg.chart`: one dot per point (class from its kind, hover: its label), the front as a step line."""
    xs, ys = [p.x for p in points], [p.y for p in points]
    axes = _Axes(xs, ys, log_x, (0.0, max(1.0, max(ys, default=1.0))), pad_x=0.05)
    ticks = sorted({min(xs), max(xs)}) if xs else []
    parts = [_open(y_label), *axes.frame(x_label, y_label, ticks)]
    if front:
        path, last = [], None
        for p in sorted(front, key=lambda p: p.x):
            if last is not None:
                path.append(f"{axes.x(p.x):.1f},{axes.y(last.y):.1f}")
            path.append(f"{axes.x(p.x):.1f},{axes.y(p.y):.1f}")
            last = p
        parts.append(f'<polyline class="front" points="{" ".join(path)}"><title>Pareto front</title></polyline>')
    for p in sorted(points, key=lambda p: p.kind == "winner"):  # the winner on top of a duplicate trial
        parts.append(f'<circle class="point {escape(p.kind)}" cx="{axes.x(p.x):.1f}" cy="{axes.y(p.y):.1f}" '
                     f'r="{7 if p.kind == "winner" else 4}"><title>{escape(p.label)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))
