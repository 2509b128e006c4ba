"""`orchestra report FOLDER`: a run folder's report as one self-contained HTML page, or served live.

With `--serve` the page is served instead of written, re-rendered on each request, and reloads itself
in the browser when the folder changes, so a run can be watched while it goes (orchestra.run_page.live).
The address is checked before anything is printed: a port in use fails at once in one line.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestra.terminal import console, fail


def report(
    folder: Annotated[Path, typer.Argument(help="A run folder: from `orchestra run` (with or without --compare), `scale` or `search`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the page (default FOLDER/report.html).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the page instead, refreshing in the browser as results arrive.")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port to listen on (0: any free one).")] = 8700,
    host: Annotated[str, typer.Option(help="With --serve: the address to listen on.")] = "127.0.0.1",
) -> None:
    """Write a run folder's report as one HTML page (open it from disk), or serve it live with --serve."""
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    if serve:
        _serve(folder, host, port)
        return
    from orchestra.run_page import write_page

    console.print(str(write_page(folder, out)), highlight=False, soft_wrap=True)


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
