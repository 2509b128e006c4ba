"""Headless Chromium for tests that open a page as a user would: does it load without errors, are the
expected elements there, does a control do what it says, and does it draw something.

Only a real browser answers those for HTML, SVG and script together. No browser driver library
(Playwright, Selenium) is needed for that: Debian's `chromium` speaks the DevTools protocol over one
websocket (`websocket-client`, in the test extra), and the few commands used here are plain JSON.
Every wait is on a protocol message (a reply, `Page.loadEventFired`), never on the clock; the
timeouts only keep a hung browser from hanging the test run.

Use the `browser` fixture (registered in tests/conftest.py): it skips, saying why, where Chromium is
not installed, except under CI (`CI=true`), where a missing browser fails the test so that CI never
skips it silently. `.ci/run` installs Chromium.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

#: Deadlock guard for one protocol exchange or one page load; nothing here waits on the clock otherwise.
TIMEOUT_S = 120
#: Viewport of every page: wide enough for the report's two-column layout.
VIEWPORT = {"width": 1280, "height": 900}
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(RuntimeError):
    """Chromium failed to start, died, or answered a command with an error."""


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian names it `chromium`), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class Page:
    """One tab, attached as a flat session: commands, the events seen so far, and the page's errors."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self._session = session_id
        self.events: list[dict[str, Any]] = []

    def _enable(self) -> None:
        """Report page, script and log events, and fix the viewport."""
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", deviceScaleFactor=1, mobile=False, **VIEWPORT)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self._browser.send(method, params, session=self._session)

    def wait_for(self, method: str, after: int = 0) -> dict[str, Any]:
        """The first event `method` at index >= `after` of `events`, receiving until it arrives."""
        return self._browser.wait_for_event(self, method, after)

    def goto(self, url: str) -> None:
        """Navigate and return once the page's load event has fired."""
        mark = len(self.events)
        reply = self.send("Page.navigate", url=url)
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")
        self.wait_for("Page.loadEventFired", after=mark)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw: {_describe_exception(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    def count(self, selector: str) -> int:
        return self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")

    def click(self, selector: str) -> None:
        """Click the first element matching `selector` (a click event, as a user's click dispatches)."""
        if not self.evaluate(f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))"):
            raise BrowserError(f"nothing matches {selector!r} to click")

    def hidden_count(self, selector: str) -> int:
        """How many elements matching `selector` are not rendered (display none, or inside a hidden one)."""
        return self.evaluate(
            f"[...document.querySelectorAll({json.dumps(selector)})].filter(e => e.offsetParent === null).length"
        )

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries (failed loads) so far."""
        self.evaluate("0")  # a round trip: every event the page sent before it has now been received
        found = []
        for event in self.events:
            method, params = event["method"], event["params"]
            if method == "Runtime.exceptionThrown":
                found.append(_describe_exception(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, full_page: bool = False) -> bytes:
        """The page as PNG bytes: the viewport, or with `full_page` the whole document."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])


def _describe_exception(details: dict[str, Any]) -> str:
    exception = details.get("exception") or {}
    where = f"{details.get('url', '')}:{details.get('lineNumber', '?')}"
    return f"{exception.get('description') or details.get('text', 'exception')} at {where}"


class Browser:
    """A headless Chromium process and the websocket to its DevTools endpoint.

    One connection carries every tab's session (`Target.attachToTarget` with `flatten`), so a reply
    or event is routed by its `sessionId`.
    """

    def __init__(self, executable: str, profile: Path) -> None:
        args = [
            executable, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
            "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
            "--disable-background-networking", "--hide-scrollbars", "--mute-audio",
            "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for a long page
            "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        found: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain_stderr, args=(found,), daemon=True).start()
        try:
            url = found.get(timeout=TIMEOUT_S)
        except queue.Empty:
            url = None
        if url is None:
            self._process.kill()
            raise BrowserError("chromium did not open its DevTools endpoint:\n" + "".join(self.stderr[-20:]))
        try:
            self._socket = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        except (websocket.WebSocketException, OSError) as err:
            self._process.kill()
            raise BrowserError(f"cannot connect to chromium at {url}: {err}") from None
        self._ids = itertools.count(1)
        self._pages: dict[str, Page] = {}

    def _drain_stderr(self, found: queue.Queue[str | None]) -> None:
        """Read Chromium's stderr to its end (a full pipe would stall it), handing on the endpoint's URL."""
        assert self._process.stderr is not None
        announced = False
        for line in self._process.stderr:
            self.stderr.append(line)
            if not announced and (match := _LISTENING.search(line)):
                found.put(match.group(1))
                announced = True
        found.put(None)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result, keeping the events that arrive before it."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply["result"]

    def wait_for_event(self, page: Page, method: str, after: int) -> dict[str, Any]:
        while True:
            for event in page.events[after:]:
                if event["method"] == method:
                    return event["params"]
            after = len(page.events)
            self._receive()

    def _receive(self) -> dict[str, Any]:
        """The next message; an event is appended to its page's `events` on the way."""
        try:
            message = json.loads(self._socket.recv())
        except (websocket.WebSocketException, OSError) as err:
            raise BrowserError(f"lost chromium ({err}):\n" + "".join(self.stderr[-20:])) from None
        if "method" in message and (page := self._pages.get(message.get("sessionId", ""))):
            page.events.append(message)
        return message

    @contextlib.contextmanager
    def new_page(self) -> Iterator[Page]:
        """A fresh tab for one test, closed afterwards."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session)
        page._enable()
        try:
            yield page
        finally:
            self._pages.pop(session, None)
            self.send("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        with contextlib.suppress(BrowserError, websocket.WebSocketException, OSError):
            self.send("Browser.close")
        self._socket.close()
        try:
            self._process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the test session; open a tab with `browser.new_page()`."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed, and CI must run the browser tests (.ci/run installs it)", pytrace=False)
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); CI installs it and runs this test")
    instance = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield instance
    finally:
        instance.close()
