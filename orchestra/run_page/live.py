"""The report of a run folder, served while the run is going (`orchestra report FOLDER --serve`).

A run writes its folder as it goes (results.jsonl a line per finished problem, traces, summaries), so
the live view needs no link to the running process: each request renders the page afresh from the
folder, and a few lines of script in the page ask `/version` (a fingerprint of the folder's files:
names, sizes, modification times) every second and reload the page when it has changed, keeping
what the reader opened, ticked and scrolled to. The page itself is the same self-contained page
`orchestra report` writes; only that script is added.

Two routes and a fingerprint need no web framework: the standard library's threading HTTP server
serves them, one thread per request, so a slow render never holds up a poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())

#: How often the page asks whether the folder has changed.
POLL_MS = 1000
_RELOADER = """<script>
(() => {
  const shown = %s, key = "orchestra-live:" + location.pathname;
  const kept = JSON.parse(sessionStorage.getItem(key) || "null");
  sessionStorage.removeItem(key);
  if (kept) {  // as the reader left it: the same problems open, the same filters on, the same place
    for (const id of kept.open) { const d = document.getElementById(id); if (d) d.open = true; }
    for (const id of kept.checked) {
      const box = document.getElementById(id);
      if (box && !box.checked) { box.checked = true; box.dispatchEvent(new Event("change")); }
    }
    window.scrollTo(kept.x, kept.y);
  }
  function keep() {
    sessionStorage.setItem(key, JSON.stringify({
      open: [...document.querySelectorAll("details[open][id]")].map(d => d.id),
      checked: [...document.querySelectorAll("input[type=checkbox][id]:checked")].map(b => b.id),
      x: window.scrollX, y: window.scrollY,
    }));
  }
  async function poll() {
    try {
      const reply = await fetch("/version", {cache: "no-store"});
      if (reply.ok && (await reply.text()) !== shown) { keep(); location.reload(); return; }
    } catch (err) {}  // the server is gone for now: keep the page, ask again
    setTimeout(poll, %d);
  }
  setTimeout(poll, %d);
})();
</script>"""


def folder_version(folder: Path) -> str:
    """A fingerprint that changes whenever a file under `folder` is added, removed, grown or rewritten."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        with contextlib.suppress(FileNotFoundError):  # a file replaced (atomically) while we looked
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def live_page(folder: Path) -> tuple[HTTPStatus, str]:
    """The report page with the reloading script, and its status.

    The version is taken before rendering, so a result that lands during the render makes the next
    poll reload rather than being missed. A folder that holds no report yet (a run still loading its
    model) or cannot be read whole gets a short page that says so, and reloads as well.
    """
    from orchestra.run_page import NotAReportFolder, render_page

    version = folder_version(folder)
    status = HTTPStatus.OK
    try:
        page = render_page(folder)
    except NotAReportFolder as err:
        page = _note(f"Waiting for results: {err}")
    except Exception as err:  # a folder caught mid-write: say so, and try again when it changes
        _log.exception("rendering %s failed", folder)
        status, page = HTTPStatus.INTERNAL_SERVER_ERROR, _note(f"Cannot render {folder}: {err!r}")
    script = _RELOADER % (json.dumps(version), POLL_MS, POLL_MS)
    head, body_end, tail = page.rpartition("</body>")
    return status, (f"{head}{script}{body_end}{tail}" if body_end else page + script)


def _note(text: str) -> str:
    return f"<!doctype html><html><head><meta charset=\"utf-8\"><title>report</title></head><body><p>{html.escape(text)}</p></body></html>"


class _LiveHandler(BaseHTTPRequestHandler):
    server: LiveView

    def do_GET(self) -> None:  # noqa: N802  (the standard library's name)
        route = self.path.split("?", 1)[0]
        if route in ("/", "/index.html"):
            status, page = live_page(self.server.folder)
            self._reply(status, "text/html; charset=utf-8", page)
        elif route == "/version":
            self._reply(HTTPStatus.OK, "text/plain; charset=utf-8", folder_version(self.server.folder))
        elif route == "/favicon.ico":
            self._reply(HTTPStatus.NO_CONTENT, "image/x-icon", "")
        else:
            self._reply(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "not found")

    def _reply(self, status: HTTPStatus, content_type: str, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        _log.debug(format, *args)  # a poll a second would flood the terminal


class LiveView(ThreadingHTTPServer):
    """An HTTP server of one folder's live report; `url` is where to open it."""

    daemon_threads = True

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = Path(folder)
        super().__init__((host, port), _LiveHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


@contextlib.contextmanager
def live_server(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[LiveView]:
    """A live view serving in a background thread (port 0: a free one), shut down on exit."""
    server = LiveView(folder, host, port)
    thread = threading.Thread(target=server.serve_forever, name="live-report", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
