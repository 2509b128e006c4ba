"""The live view's server, without a browser: the page carries the folder's version, /version
changes the moment a result is appended, and the command fails in one line on a taken port.
(tests/test_report_browser.py watches the page reload itself in Chromium.)"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_backend import fake_backend  # noqa: F401  (fixture)
from report_folders import make_folder
from typer.testing import CliRunner

from orchestra.run_page.live import folder_version, live_server


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_version_changes_when_a_result_is_appended(tmp_path: Path, fake_backend) -> None:
    folder = make_folder("run", tmp_path)
    results = folder / "results.jsonl"
    with live_server(folder, port=0) as server:
        status, page = _get(server.url)
        before = _get(server.url + "version")[1]
        assert status == 200 and '<main id="report"' in page
        assert json.dumps(before) in page and 'fetch("/version"' in page  # the page knows what it shows
        assert before == folder_version(folder)
        with results.open("a") as handle:
            handle.write(results.read_text().splitlines()[0].replace('"p0"', '"p-late"') + "\n")
        after = _get(server.url + "version")[1]
        assert after != before and json.dumps(after) in _get(server.url)[1]
        assert _get(server.url + "favicon.ico")[0] == 204
        assert _get(server.url + "nothing-here")[0] == 404


def test_a_folder_without_results_yet_is_watched_until_they_come(tmp_path: Path, fake_backend) -> None:
    """A run still loading its model has written nothing the page can show: the live view says it
    waits (and polls), and shows the run once its files are there."""
    folder = tmp_path / "starting"
    folder.mkdir()
    with live_server(folder, port=0) as server:
        status, page = _get(server.url)
        assert status == 200 and "Waiting for results" in page and 'fetch("/version"' in page
        empty = _get(server.url + "version")[1]
        made = make_folder("run", tmp_path)
        for path in made.iterdir():
            path.rename(folder / path.name)
        assert _get(server.url + "version")[1] != empty
        status, page = _get(server.url)
        assert status == 200 and '<main id="report" data-kind="run"' in page


def test_serving_on_a_taken_port_fails_in_one_line(tmp_path: Path) -> None:
    from orchestra.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["report", str(tmp_path), "--serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port} is already in use" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--serve"], []])
def test_a_missing_folder_fails_in_one_line(tmp_path: Path, args: list[str]) -> None:
    from orchestra.cli import app

    result = CliRunner().invoke(app, ["report", str(tmp_path / "none"), *args])
    assert result.exit_code == 2 and "does not exist" in result.output
