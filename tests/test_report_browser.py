"""The report pages, opened in headless Chromium as a user would open them from disk.

For each kind of output folder (a run, a `--compare` run, a particle-filtering run, a `scale` folder,
a `search` folder), made by the real commands on the fake model: the page loads with no console
error or uncaught exception, holds the elements its kind promises, the "wrong only" filter hides
exactly the right problems, and its screenshot shows a drawn page, not a blank one. The live view
(`orchestra report --serve`) is opened the same way and must reload itself when a result arrives.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from fake_backend import fake_backend  # noqa: F401  (fixture)
from PIL import Image
from report_folders import KINDS, make_folder

from orchestra.run_page import write_page
from orchestra.run_page.live import live_server

_RUN = ["#summary svg.dag", "#problems .problem[data-correct]", "#problems .problem .candidate", "#filter-wrong"]
#: What each kind of page must hold (each selector matches at least once), and its `data-kind`.
EXPECTED = {
    "run": ("run", _RUN),
    "compare": ("compare", [*_RUN, "#filter-disagree"]),
    "stepwise": ("run", [*_RUN, "svg.tree"]),
    "scale": ("scale", ["#summary", "#scale svg.chart"]),
    "search": ("search", ["#summary", "#trials svg.chart"]),
}


def assert_drawn(png: bytes) -> None:
    """The screenshot is a real PNG of the viewport with text and drawing on it: many colours (text is
    anti-aliased) and at least 1% of the pixels off the background, which a blank page never has."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=image.width * image.height)
    assert colours is not None and len(colours) >= 32, f"only {len(colours or [])} colours: a blank page?"
    commonest = max(count for count, _ in colours)
    assert commonest <= 0.99 * image.width * image.height, "the background covers over 99% of the page"


def test_the_blank_check_refuses_a_flat_page() -> None:
    flat = io.BytesIO()
    Image.new("RGB", (1280, 900), "white").save(flat, format="PNG")
    with pytest.raises(AssertionError):
        assert_drawn(flat.getvalue())


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_page_opens_without_errors_and_is_drawn(kind: str, tmp_path: Path, fake_backend, browser) -> None:
    folder = make_folder(kind, tmp_path)
    page_file = write_page(folder, tmp_path / f"{kind}.html")
    data_kind, selectors = EXPECTED[kind]
    with browser.new_page() as page:
        page.goto(page_file.as_uri())
        assert page.errors() == []
        assert page.evaluate("document.querySelector('main#report').dataset.kind") == data_kind
        assert {selector: page.count(selector) > 0 for selector in selectors} == dict.fromkeys(selectors, True)
        png = page.screenshot()
    (tmp_path / f"{kind}.png").write_bytes(png)
    assert_drawn(png)


def test_a_step_tree_is_drawn_once_its_problem_is_opened(tmp_path: Path, fake_backend, browser) -> None:
    page_file = write_page(make_folder("stepwise", tmp_path), tmp_path / "report.html")
    with browser.new_page() as page:
        page.goto(page_file.as_uri())
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        width, height, marks = page.evaluate(
            "(t => [t.getBoundingClientRect().width, t.getBoundingClientRect().height,"
            " t.querySelectorAll('circle, rect, path, line').length])(document.querySelector('svg.tree'))"
        )
        assert width > 50 and height > 20 and marks >= 3  # nodes and the edges between them, laid out
        assert page.errors() == []


def test_wrong_only_hides_exactly_the_right_problems(tmp_path: Path, fake_backend, browser) -> None:
    page_file = write_page(make_folder("run", tmp_path), tmp_path / "report.html")
    with browser.new_page() as page:
        page.goto(page_file.as_uri())
        right, wrong = page.count(".problem[data-correct=true]"), page.count(".problem[data-correct=false]")
        assert right > 0 and wrong > 0  # the folder has both (tests/report_folders.py)
        assert page.hidden_count(".problem") == 0
        page.click("#filter-wrong")
        assert page.hidden_count(".problem[data-correct=true]") == right
        assert page.hidden_count(".problem[data-correct=false]") == 0
        page.click("#filter-wrong")
        assert page.hidden_count(".problem") == 0
        assert page.errors() == []


def test_disagreements_only_hides_the_problems_both_recipes_answered_alike(tmp_path: Path, fake_backend, browser) -> None:
    """Voting answers three of four problems right and greedy none, and both answer the fourth 99:
    the filter hides that one (once, or once per recipe) and keeps the other three."""
    page_file = write_page(make_folder("compare", tmp_path), tmp_path / "report.html")
    with browser.new_page() as page:
        page.goto(page_file.as_uri())
        shown = page.count(".problem")
        page.click("#filter-disagree")
        hidden = page.hidden_count(".problem")
        assert 0 < hidden < shown and shown - hidden >= 3
        page.click("#filter-disagree")
        assert page.hidden_count(".problem") == 0
        assert page.errors() == []


def test_the_live_view_reloads_when_a_result_arrives(tmp_path: Path, fake_backend, browser) -> None:
    folder = make_folder("run", tmp_path)
    results = folder / "results.jsonl"
    first_line = results.read_text().splitlines()[0]
    results.write_text(first_line + "\n")  # a run that has finished one problem so far
    with live_server(folder, port=0) as server, browser.new_page() as page:
        page.goto(server.url)
        assert page.count(".problem") == 1 and page.errors() == []
        opened = page.evaluate("(d => (d.open = true, d.id))(document.querySelector('details.problem[id]'))")
        page.click("#filter-wrong")
        mark = len(page.events)
        again = json.loads(first_line) | {"problem_id": "p-late"}
        with results.open("a") as handle:
            handle.write(json.dumps(again) + "\n")
        page.wait_for("Page.loadEventFired", after=mark)  # the page polled /version and reloaded itself
        assert page.count(".problem") == 2 and page.errors() == []
        # as the reader left it: the problem still open, "wrong only" still on and still hiding
        assert page.evaluate(f"document.getElementById({json.dumps(opened)}).open")
        assert page.evaluate("document.getElementById('filter-wrong').checked")
        right = page.count(".problem[data-correct=true]")
        assert right > 0 and page.hidden_count(".problem[data-correct=true]") == right
