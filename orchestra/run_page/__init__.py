"""One self-contained HTML page of a run, a `--compare` run, a scale curve or a search.

`orchestra report FOLDER` writes it: every problem, candidate, score and
step-wise search tree of a run, so the question "why was this answer wrong?"
is answered in a browser rather than by reading trace.jsonl. The page needs no
server and no network: CSS and SVG charts are inline, model text is escaped.
"""

from orchestra.run_page.folder_kind import FolderKind, NotAReportFolder, folder_kind
from orchestra.run_page.page import render_page, write_page

__all__ = ["FolderKind", "NotAReportFolder", "folder_kind", "render_page", "write_page"]
