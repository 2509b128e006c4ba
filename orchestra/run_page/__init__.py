"""STAND-IN for the `report` branch's page generator (issue 17, item 2); on merge, take that branch's file.

It exists only so that the live view (`live.py`) and the browser test can be built and run before the
real generator is merged. It follows the same contract and nothing more: `<main id="report"
data-kind="run|compare|scale|search">`, `#summary` with `svg.dag`, `#problems` of
`.problem[data-correct]` holding `.candidate`s, `#filter-wrong` (and `#filter-disagree` on compare
pages), `svg.tree` for step-wise runs, `#scale svg.chart`, `#trials svg.chart`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

_STEPWISE = {"particle_filtering", "beam_search", "dvts", "mcts", "best_first", "prm_best_of_n"}
_SCRIPT = """
const wrong = document.getElementById('filter-wrong');
const disagree = document.getElementById('filter-disagree');
function apply() {
  for (const p of document.querySelectorAll('.problem')) {
    const hide = (wrong.checked && p.dataset.correct === 'true') || (disagree && disagree.checked && p.dataset.disagree !== 'true');
    p.hidden = hide;
  }
}
wrong.addEventListener('change', apply);
if (disagree) disagree.addEventListener('change', apply);
"""


def _kind(folder: Path) -> str:
    if (folder / "comparison.json").exists():
        return "compare"
    if (folder / "scale.csv").exists():
        return "scale"
    if (folder / "trials.csv").exists() or (folder / "study.db").exists():
        return "search"
    return "run"


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _chart(values: list[float]) -> str:
    points = " ".join(f"{20 + 40 * i},{180 - 160 * v}" for i, v in enumerate(values)) or "20,180"
    return (f'<svg class="chart" width="400" height="200"><rect width="400" height="200" fill="#f4f6fb"/>'
            f'<polyline points="{points}" fill="none" stroke="#1f6feb" stroke-width="3"/></svg>')


def _problems(run: Path, other: list[dict] | None = None) -> str:
    traces: dict[str, list[dict]] = {}
    for trace in _lines(run / "trace.jsonl"):
        traces.setdefault(trace["problem_id"], []).extend(trace.get("outputs", []))
    others = {r["problem_id"]: r for r in other or []}
    parts = []
    for result in _lines(run / "results.jsonl"):
        pid = result["problem_id"]
        correct = (result.get("score") or 0) >= 1
        disagree = pid in others and others[pid].get("answer") != result.get("answer")
        candidates = "".join(
            f'<li class="candidate">{html.escape(str(c.get("answer")))}: {html.escape(c.get("text", "")[:200])}</li>'
            for c in traces.get(pid, [])
        )
        parts.append(
            f'<section class="problem" data-correct="{str(correct).lower()}" data-disagree="{str(disagree).lower()}">'
            f'<h3 style="color:{"#1a7f37" if correct else "#cf222e"}">{html.escape(pid)}: '
            f'{html.escape(str(result.get("answer")))} (reference {html.escape(str(result.get("reference")))})</h3>'
            f"<ul>{candidates}</ul></section>"
        )
    return "".join(parts)


def render_page(folder: str | Path) -> str:
    """The report of `folder` as one self-contained HTML page."""
    folder = Path(folder)
    kind = _kind(folder)
    body = ['<section id="summary"><h2>Summary</h2><svg class="dag" width="300" height="60">'
            '<rect x="5" y="10" width="100" height="40" fill="#dbe9ff"/><rect x="190" y="10" width="100" height="40" '
            'fill="#ffe3c2"/><line x1="105" y1="30" x2="190" y2="30" stroke="#333"/></svg></section>']
    filters = '<label><input type="checkbox" id="filter-wrong"> wrong only</label>'
    if kind == "compare":
        names = [r["recipe"] for r in json.loads((folder / "comparison.json").read_text())["recipes"]]
        runs = [folder / name for name in names]
        filters += '<label><input type="checkbox" id="filter-disagree"> disagreements</label>'
        problems = _problems(runs[0], _lines(runs[1] / "results.jsonl")) if len(runs) > 1 else ""
    elif kind == "run":
        problems = _problems(folder)
        meta = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
        if {n.get("technique") for n in meta.get("definition", {}).get("nodes", [])} & _STEPWISE:
            body.append('<svg class="tree" width="300" height="120"><circle cx="150" cy="20" r="10" fill="#888"/>'
                        '<circle cx="80" cy="90" r="10" fill="#1a7f37"/><line x1="150" y1="20" x2="80" y2="90" '
                        'stroke="#333"/></svg>')
    else:
        problems = ""
    if kind == "scale":
        body.append(f'<section id="scale">{_chart([0.2, 0.5, 0.8])}</section>')
    if kind == "search":
        body.append(f'<section id="trials">{_chart([0.3, 0.6, 0.7, 0.9])}</section>')
    body.append(f'<section id="problems">{filters}{problems}</section>')
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(folder.name)}</title></head>'
            f'<body><main id="report" data-kind="{kind}"><h1>{html.escape(folder.name)}</h1>{"".join(body)}</main>'
            f"<script>{_SCRIPT}</script></body></html>")


def write_page(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the page (to FOLDER/report.html unless `out`) and return its path."""
    path = Path(out) if out else Path(folder) / "report.html"
    path.write_text(render_page(folder))
    return path
