"""`orchestra report FOLDER`: one self-contained HTML page of a run, --compare, scale or search folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestra.terminal import fail


def report(
    folder: Annotated[Path, typer.Argument(help="A run folder, a --compare base folder, a scale folder or a search folder.")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write the page (default FOLDER/report.html).")] = None,
) -> None:
    """Write one HTML page of every problem, candidate, score and search tree (open it from disk) and print its path."""
    from orchestra.run_page import NotAReportFolder, write_page

    # A live view (--serve: the page served and refreshed while the run goes on) belongs here, before writing.
    try:
        path = write_page(folder, out)
    except NotAReportFolder as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(f"cannot write the page: {err.strerror or err}") from None
    print(path)
