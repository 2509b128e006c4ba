"""`orchestra report FOLDER`: one self-contained HTML page of a run, --compare, scale or search folder.

With `--serve` the page is served instead of written (orchestra.run_page.live): re-rendered on each
request, and reloaded by the browser when the folder changes, so a run can be watched while it goes.
A port in use fails at once in one line.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestra.terminal import console, fail


def report(
    folder: Annotated[Path, typer.Argument(help="A run folder, a --compare base folder, a scale folder or a search folder.")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write the page (default FOLDER/report.html).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the page instead of writing it, refreshing in the browser as results arrive.")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port to listen on (0: any free one).")] = 8700,
    host: Annotated[str, typer.Option(help="With --serve: the address to listen on.")] = "127.0.0.1",
) -> None:
    """Write one HTML page of every problem, candidate, score and search tree (open it from disk) and print its path."""
    from orchestra.run_page import NotAReportFolder, write_page

    if serve:  # a run that has not written its first result yet can be watched: the page waits for it
        if not folder.is_dir():
            raise fail(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist")
        _serve(folder, host, port)
        return
    try:
        path = write_page(folder, out)
    except NotAReportFolder as err:
        raise fail(str(err)) from None
    except OSError as err:
        raise fail(f"cannot write the page: {err.strerror or err}") from None
    print(path)


def _serve(folder: Path, host: str, port: int) -> None:
    from orchestra.run_page.live import LiveView

    try:
        server = LiveView(folder, host, port)
    except OSError as err:
        why = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be listened on: {err.strerror or err}"
        raise fail(f"{host}:{port} {why} (choose another --port or --host)") from None
    console.print(f"serving the report of {folder} at {server.url} (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
