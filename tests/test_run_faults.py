"""Bad input and faults on the run side, through the command line as a user meets them.

Each case ends in one line and the right exit code, never a traceback: a run
whose problems all failed (exit 1, not complete), some failed (exit 0, a
warning, not complete), an --out that cannot hold a run, a --cache that is a
folder, a garbled run.json, --limit 0, a torn last line of results.jsonl,
and a run killed with SIGKILL and resumed (no problem twice, every line whole).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_backend import fake_backend, vote_recipe, write_sums  # noqa: F401  (fixture)
from search_fixtures import fake_space, write_split_sums
from typer.testing import CliRunner

import orchestra
from orchestra import cli
from orchestra.backends import base as backends_base
from orchestra.recipe import Recipe

TESTS = Path(__file__).resolve().parent


def write_recipe(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "vote.yaml"
    path.write_text(Recipe.model_validate(vote_recipe(**changes)).to_yaml())
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def one_error_line(result, *needles: str) -> str:
    """The command failed with a single line on stderr (no traceback) that says all of `needles`."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.stderr.split())  # the error console wraps long lines
    assert "Traceback" not in result.output and text.startswith("error:"), result.output
    assert text.count("error:") == 1
    for needle in needles:
        assert needle in text, text
    return text


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line whole JSON


# --- failed problems -----------------------------------------------------------------------


def test_a_run_whose_problems_all_failed_exits_1_and_is_not_complete(tmp_path: Path, fake_backend) -> None:
    task = write_sums(tmp_path / "sums.jsonl", 3, extra={0: "EXPLODE", 1: "EXPLODE", 2: "EXPLODE"})
    out = tmp_path / "run"
    result = invoke("run", write_recipe(tmp_path), "--task", task, "--out", out, "--no-cache")
    assert result.exit_code == 1, result.output
    one_error_line(result, "vote: all 3 problems failed", "the first (p0): RuntimeError: fake backend failure")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["errors"] == 3


def test_a_run_with_some_failed_problems_exits_0_warns_and_is_not_complete(tmp_path: Path, fake_backend) -> None:
    task = write_sums(tmp_path / "sums.jsonl", 3, extra={1: "EXPLODE"})
    out = tmp_path / "run"
    result = invoke("run", write_recipe(tmp_path), "--task", task, "--out", out, "--no-cache")
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith("warning: vote: 1 of 3 problems failed (counted as wrong; rerun with --out")
    assert "the first (p1): RuntimeError" in warning and "error:" not in warning
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["errors"] == 1 and summary["accuracy"] == pytest.approx(2 / 3)

    task = write_sums(tmp_path / "sums.jsonl", 3)  # p1 no longer fails; the spec (the file's name) is the same
    again = invoke("run", write_recipe(tmp_path), "--task", task, "--out", out, "--no-cache")
    assert again.exit_code == 0 and "failed" not in again.stderr, again.output
    assert json.loads((out / "summary.json").read_text())["complete"] is True


def test_compare_exits_1_when_one_recipe_failed_on_every_problem(tmp_path: Path, fake_backend) -> None:
    fake_backend.fail_when = lambda request, prompt: request.n == 2  # only the second recipe's calls fail
    first = write_recipe(tmp_path)
    second = tmp_path / "two.yaml"
    second.write_text(Recipe.model_validate(vote_recipe("two", n=2)).to_yaml())
    task = write_sums(tmp_path / "sums.jsonl", 2)
    result = invoke("run", first, "--compare", second, "--task", task, "--out", tmp_path / "run", "--no-cache")
    assert result.exit_code == 1, result.output
    one_error_line(result, "two: all 2 problems failed")
    assert json.loads((tmp_path / "run/vote/summary.json").read_text())["complete"] is True


def test_scale_whose_problems_all_failed_exits_1_with_a_line_per_n(tmp_path: Path, fake_backend) -> None:
    task = write_sums(tmp_path / "sums.jsonl", 2, extra={0: "EXPLODE", 1: "EXPLODE"})
    out = tmp_path / "scale"
    result = invoke("scale", write_recipe(tmp_path), "--n", "1,2", "--task", task, "--out", out, "--cache", tmp_path / "c.sqlite")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    said = " ".join(result.stderr.split())
    assert said == (f"error: n=1: all 2 problems failed (see {out / 'n1/results.jsonl'}) "
                    f"error: n=2: all 2 problems failed (see {out / 'n2/results.jsonl'})")
    assert not (out / "scale.png").exists()


# --- paths checked before anything loads -------------------------------------------------


def assert_nothing_loaded(fake_backend) -> None:
    assert backends_base._LOADED == {} and fake_backend.log.calls == []


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("file", "is a file, not a folder"),
        ("file/run", "lies under"),
        ("/proc/orchestra-test/run", "cannot write in /proc/orchestra-test/run"),
    ],
)
def test_an_out_that_cannot_hold_a_run_fails_at_once_with_one_line(tmp_path: Path, fake_backend, where: str, says: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / where
    result = invoke("run", write_recipe(tmp_path), "--task", write_sums(tmp_path / "sums.jsonl", 2), "--out", out, "--no-cache")
    assert result.exit_code == 2
    one_error_line(result, "--out:", says)
    assert_nothing_loaded(fake_backend)
    assert not Path("/proc/orchestra-test").exists()


def test_checking_out_leaves_no_folder_behind(tmp_path: Path, fake_backend) -> None:
    out = tmp_path / "a/b/run"
    result = invoke("run", write_recipe(tmp_path), "--task", write_sums(tmp_path / "sums.jsonl", 2), "--out", out,
                    "--cache", tmp_path)
    one_error_line(result, f"--cache {tmp_path} is a folder", "generations.sqlite")
    assert not (tmp_path / "a").exists()  # the check made a/b/run to try writing there, and removed it
    assert_nothing_loaded(fake_backend)


def test_a_cache_that_is_not_a_database_is_named_in_one_line(tmp_path: Path, fake_backend) -> None:
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"not sqlite " * 500)
    result = invoke("run", write_recipe(tmp_path), "--task", write_sums(tmp_path / "sums.jsonl", 2), "--out",
                    tmp_path / "run", "--cache", cache)
    assert result.exit_code == 2
    one_error_line(result, f"generation cache {cache}")
    assert_nothing_loaded(fake_backend)


def test_a_garbled_run_json_is_named_before_anything_loads(tmp_path: Path, fake_backend) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"recipe": ')
    result = invoke("run", write_recipe(tmp_path), "--task", write_sums(tmp_path / "sums.jsonl", 2), "--out", out, "--no-cache")
    assert result.exit_code == 2
    one_error_line(result, f"{out / 'run.json'} cannot be read", "move it aside")
    assert_nothing_loaded(fake_backend)
    with pytest.raises(orchestra.run_folder.RunFolderError, match="cannot be read"):  # the Python API names it too
        orchestra.run(write_recipe(tmp_path), write_sums(tmp_path / "sums.jsonl", 2), out=out, cache=False)


def test_a_folder_of_another_recipe_is_refused_before_anything_loads(tmp_path: Path, fake_backend) -> None:
    task, out = write_sums(tmp_path / "sums.jsonl", 2), tmp_path / "run"
    orchestra.run(write_recipe(tmp_path), task, out=out, cache=False)
    backends_base._LOADED.clear()
    fake_backend.reset()
    result = invoke("run", write_recipe(tmp_path, n=2), "--task", task, "--out", out, "--no-cache")
    assert result.exit_code == 2
    one_error_line(result, "holds a run with a different fingerprint")
    assert_nothing_loaded(fake_backend)


def test_run_json_is_never_left_half_written(tmp_path: Path, fake_backend, monkeypatch) -> None:
    task, out = write_sums(tmp_path / "sums.jsonl", 2), tmp_path / "run"
    real = Path.write_text

    def disk_full(self: Path, text: str, *args, **kwargs):
        if "run.json" in self.name:
            real(self, text[: len(text) // 2])
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        orchestra.run(write_recipe(tmp_path), task, out=out, cache=False)
    monkeypatch.setattr(Path, "write_text", real)
    assert not (out / "run.json").exists()
    assert orchestra.run(write_recipe(tmp_path), task, out=out, cache=False).summary.complete


def test_scale_and_search_check_out_before_loading(tmp_path: Path, fake_backend) -> None:
    (tmp_path / "file").write_text("not a folder")
    scale = invoke("scale", write_recipe(tmp_path), "--n", "1,2", "--task", write_sums(tmp_path / "sums.jsonl", 2),
                   "--out", tmp_path / "file", "--cache", tmp_path / "cache.sqlite")
    assert scale.exit_code == 2
    one_error_line(scale, "--out:", "is a file, not a folder")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space()))
    search = invoke("search", space, "--task", write_split_sums(tmp_path / "split.jsonl", 4), "--trials", "1",
                    "--out", tmp_path / "file/search")
    assert search.exit_code == 2
    one_error_line(search, "--out:", "lies under")
    assert_nothing_loaded(fake_backend)


def test_scale_names_a_garbled_run_json_of_one_n(tmp_path: Path, fake_backend) -> None:
    (tmp_path / "scale/n2").mkdir(parents=True)
    (tmp_path / "scale/n2/run.json").write_text("[")
    result = invoke("scale", write_recipe(tmp_path), "--n", "1,2", "--task", write_sums(tmp_path / "sums.jsonl", 2),
                    "--out", tmp_path / "scale", "--cache", tmp_path / "cache.sqlite")
    assert result.exit_code == 2
    one_error_line(result, "n2/run.json cannot be read")
    assert_nothing_loaded(fake_backend)


@pytest.mark.parametrize("command", ["run", "scale"])
def test_limit_below_one_names_the_option(tmp_path: Path, fake_backend, command: str) -> None:
    result = invoke(command, write_recipe(tmp_path), "--task", write_sums(tmp_path / "sums.jsonl", 2), "--limit", "0",
                    "--no-cache" if command == "run" else "--subsets=1")
    assert result.exit_code == 2
    one_error_line(result, "--limit must be at least 1 (got 0)")


# --- torn lines and kill -9 ----------------------------------------------------------------


def test_a_torn_last_line_is_cut_before_the_resumed_run_appends(tmp_path: Path, fake_backend) -> None:
    task, out = write_sums(tmp_path / "sums.jsonl", 3), tmp_path / "run"
    first = invoke("run", write_recipe(tmp_path), "--task", task, "--limit", "2", "--out", out, "--no-cache")
    assert first.exit_code == 0, first.output
    with (out / "results.jsonl").open("a") as handle:
        handle.write('{"problem_id": "p2", "status": "o')  # power went out mid-write
    with (out / "trace.jsonl").open("a") as handle:
        handle.write('{"problem_id": "p2", "no')
    again = invoke("run", write_recipe(tmp_path), "--task", task, "--limit", "3", "--out", out, "--no-cache")
    assert again.exit_code == 0, again.output
    notes = " ".join(again.stderr.split())
    assert f"note: {out / 'results.jsonl'} ended in a torn line (33 bytes, an interrupted write): removed it; that problem reruns" in notes
    assert f"{out / 'trace.jsonl'} ended in a torn line" in notes
    assert [r["problem_id"] for r in lines(out / "results.jsonl")] == ["p0", "p1", "p2"]
    assert len(lines(out / "trace.jsonl")) == 3 * 2
    assert json.loads((out / "summary.json").read_text())["complete"] is True


_RUN_WITH_FAKE_BACKEND = """
import sys
sys.path.insert(0, {tests!r})
from fake_backend import FakeBackend
from orchestra.backends import BACKENDS
from orchestra.cli import app
BACKENDS.add("fake", FakeBackend)
FakeBackend.reset()
FakeBackend.delay = lambda request, prompt: 3600.0 if "SLOW" in prompt else 0.0
app(sys.argv[1:])
"""


def test_a_run_killed_with_sigkill_resumes_with_no_problem_twice(tmp_path: Path, fake_backend) -> None:
    """p3 hangs (its prompt makes the fake backend wait an hour): kill -9 once p0-p2 are written, then resume."""
    task, out = write_sums(tmp_path / "sums.jsonl", 5, extra={3: "SLOW"}), tmp_path / "run"
    args = ["run", str(write_recipe(tmp_path)), "--task", task, "--out", str(out), "--no-cache", "--concurrency", "1"]
    script = _RUN_WITH_FAKE_BACKEND.format(tests=str(TESTS))
    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        results = out / "results.jsonl"
        while not (results.exists() and results.read_text().count("\n") >= 3):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the first three problems never finished"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert [r["problem_id"] for r in lines(out / "results.jsonl")] == ["p0", "p1", "p2"]
    with (out / "results.jsonl").open("a") as handle:
        handle.write('{"problem_id": "p3"')  # and, as with power loss, a record cut mid-write
    again = invoke(*args)  # in this process, where p3's prompt does not hang
    assert again.exit_code == 0, again.output
    resumed = lines(out / "results.jsonl")
    assert sorted(r["problem_id"] for r in resumed) == ["p0", "p1", "p2", "p3", "p4"]
    assert "resumed: 3 problems were already finished" in " ".join(again.stdout.split())


@pytest.mark.parametrize(
    ("before", "after"),
    [(b"", b""), (b"{}\n", b"{}\n"), (b"{}\n{\"a\": 12", b"{}\n"), (b"{\"a\": 12", b""), (b"{}\n{}\n{\"abcdefghij", b"{}\n{}\n")],
)
def test_cutting_a_torn_line_reads_back_across_blocks(tmp_path: Path, monkeypatch, before: bytes, after: bytes) -> None:
    from orchestra import run_folder

    monkeypatch.setattr(run_folder, "_BLOCK", 3)  # torn lines longer than a block: the search goes on back
    (tmp_path / "results.jsonl").write_bytes(before)
    folder = run_folder.RunFolder(tmp_path)
    assert (tmp_path / "results.jsonl").read_bytes() == after
    assert len(folder.repaired) == (before != after)
