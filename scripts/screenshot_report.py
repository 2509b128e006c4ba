"""Render the report of a real run folder and save what a browser shows of it as docs/report.png.

The README's picture of `orchestra report` is taken, not drawn: this script copies the run folder
to a scratch folder (the report is written next to a run, and the original must stay as it was),
writes the page with `orchestra.run_page.write_page`, opens it in headless Chromium with the test
suite's harness (tests/browser.py: Debian's `chromium` and `websocket-client`, from the test extra)
and saves a screenshot of the top of the page, at the width the tests use.

    make quickstart                                       # writes runs/quickstart-TIME/
    .venv/bin/python scripts/screenshot_report.py runs/quickstart-TIME [--out docs/report.png] [--height 1100]

It fails in one line when Chromium is missing or the page logs an error: a picture of a broken page
must not reach the README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import VIEWPORT, Browser, find_chromium  # noqa: E402  (the tests' harness)

from orchestra.run_page import write_page  # noqa: E402


def screenshot(folder: Path, out: Path, height: int) -> Path:
    """Save the top `height` pixels of `folder`'s report, as Chromium draws it, to `out`."""
    executable = find_chromium()
    if executable is None:
        sys.exit("error: chromium is not installed (Debian: apt-get install chromium)")
    folder, out, here = folder.resolve(), out.resolve(), Path.cwd()
    with tempfile.TemporaryDirectory(prefix="report-screenshot-") as scratch:
        # the page names its folder as given: runs/NAME, as after `make quickstart`, not a scratch path
        os.chdir(scratch)
        try:
            shutil.copytree(folder, Path("runs") / folder.name)
            page_file = write_page(Path("runs") / folder.name, Path(scratch) / "report.html")
        finally:
            os.chdir(here)
        browser = Browser(executable, Path(scratch) / "profile")
        try:
            with browser.new_page() as page:
                page.send("Emulation.setDeviceMetricsOverride", deviceScaleFactor=1, mobile=False,
                          width=VIEWPORT["width"], height=height)
                page.goto(page_file.as_uri())
                if errors := page.errors():
                    sys.exit(f"error: the page of {folder} logged errors: {errors}")
                png = page.screenshot()
        finally:
            browser.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run folder (orchestra run, --compare, scale or search)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png", help="where to save the PNG")
    parser.add_argument("--height", type=int, default=1100, help="how much of the page to show, in pixels")
    args = parser.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"error: {args.folder} is not a folder")
    print(screenshot(args.folder, args.out, args.height))


if __name__ == "__main__":
    main()
