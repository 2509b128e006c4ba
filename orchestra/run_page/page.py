"""Render a folder's page with jinja2 (autoescaped: model text never becomes markup) and write it atomically."""

from __future__ import annotations

from pathlib import Path

import jinja2

from orchestra.run_folder import write_atomically
from orchestra.run_page.compare_view import read_compare
from orchestra.run_page.folder_kind import NotAReportFolder, folder_kind
from orchestra.run_page.run_view import read_run
from orchestra.run_page.scale_view import read_scale
from orchestra.run_page.search_view import read_search
from orchestra.run_page.svg_charts import dag_svg

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("orchestra.run_page", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _interval(interval) -> str:
    if interval is None:
        return "–"
    return f"{interval.estimate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _si(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.4g}"


_ENV.filters.update(share=_share, interval=_interval, si=_si)
_ENV.globals.update(dag_svg=dag_svg)


def render_page(folder: Path) -> str:
    """The whole page of a run, --compare, scale or search folder (NotAReportFolder when it is none)."""
    folder = Path(folder)
    kind = folder_kind(folder)
    read = {"run": read_run, "compare": read_compare, "scale": read_scale, "search": read_search}[kind]
    try:
        view = read(folder)
    except (ValueError, KeyError) as err:  # a damaged run.json, comparison.json or scale.json
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotAReportFolder(f"{folder} looks like a {kind} folder, but its files cannot be read: {first_line}") from None
    return _ENV.get_template("page.html.j2").render(kind=kind, view=view, folder=folder)


def write_page(folder: Path, out: Path | None = None) -> Path:
    """Write the page (default FOLDER/report.html) through a temporary file, so a reader never sees half of it."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report.html"
    write_atomically(out, render_page(folder))
    return out
