"""Whole runs against misbehaving OpenAI-compatible servers: the run finishes, or resumes,
with nothing lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import orchestra
from fake_backend import write_sums
from fake_openai_server import FakeOpenAIServer
from orchestra.backends import base as backends_base
from orchestra.recipe import Recipe


@pytest.fixture(autouse=True)
def fresh_backends(monkeypatch, tmp_path):
    backends_base._LOADED.clear()
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    yield
    backends_base._LOADED.clear()


def remote_vote(*servers: FakeOpenAIServer, n: int = 4, **options) -> Recipe:
    settings = {"endpoints": [s.url for s in servers], "backoff": 0.01, "max_backoff": 1.0, "timeout": 5.0, **options}
    return Recipe.model_validate(
        {
            "name": "remote-vote",
            "models": {"m": {"backend": "openai", "model": "fake-served", "openai": settings}},
            "nodes": [
                {"id": "samples", "technique": "sample", "params": {"n": n, "temperature": 0.7, "max_tokens": 64}},
                {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
            ],
        }
    )


def statuses(folder: Path) -> dict[str, str]:
    """problem id -> status of its last line in results.jsonl."""
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {r["problem_id"]: r["status"] for r in rows}


def test_a_recipe_runs_end_to_end_on_a_server_and_replays_from_the_cache(tmp_path, monkeypatch):
    task = write_sums(tmp_path / "sums.jsonl", 6)
    monkeypatch.setenv("REMOTE_KEY", "sk-secret-value-42")
    with FakeOpenAIServer() as server:
        server.api_key = "sk-secret-value-42"
        recipe = remote_vote(server, api_key_env="REMOTE_KEY")
        first = orchestra.run(recipe, task, out=tmp_path / "run", cache=tmp_path / "cache.sqlite")
        assert first.accuracy == 1.0 and all(r.status == "ok" for r in first.results)
        assert len(server.completions()) == 6 and all(b["n"] == 4 for b in server.completions())
        usage = first.summary.usage
        prompts = [body["messages"] for body in server.completions()]
        # prompt tokens are the server's own count (one per character in this fake), not an estimate
        assert usage.prompt_tokens == sum(len("\n".join(f"{m['role']}: {m['content']}" for m in p)) for p in prompts)
        assert usage.estimated_calls == 0 and usage.calls == 6

        again = orchestra.run(recipe, task, cache=tmp_path / "cache.sqlite")
        assert len(server.completions()) == 6  # nothing new was asked of the server
        assert again.summary.usage.cache_hits == 24
        assert [r.answer for r in again.results] == [r.answer for r in first.results]
    written = "".join(p.read_text() for p in (tmp_path / "run").iterdir())
    assert "REMOTE_KEY" in written and "sk-secret-value-42" not in written  # the name, never the key


def test_a_run_through_429s_5xx_timeouts_and_truncated_bodies_loses_nothing(tmp_path):
    task = write_sums(tmp_path / "sums.jsonl", 8)
    with FakeOpenAIServer() as server:
        server.faults.extend(["429", "500", "truncate", "garbage", "503", "timeout", "truncate", "500"])
        server.retry_after = 0
        server.hang_seconds = 60  # a hung request outlasts the client's 2 s by far; any other takes milliseconds
        result = orchestra.run(remote_vote(server, timeout=2.0, retries=8), task, cache=False, concurrency=4)
        assert all(r.status == "ok" for r in result.results) and result.accuracy == 1.0
        assert not server.faults  # every fault was met and survived
        assert len(server.completions()) == 8 + 8


def test_a_server_that_dies_mid_run_then_the_rerun_resumes(tmp_path):
    task = write_sums(tmp_path / "sums.jsonl", 8)
    out = tmp_path / "run"
    with FakeOpenAIServer() as server:
        server.fail_after = 3
        recipe = remote_vote(server, retries=2)
        first = orchestra.run(recipe, task, out=out, cache=tmp_path / "cache.sqlite", concurrency=1)
        done = {r.problem_id for r in first.results if r.status == "ok"}
        failed = [r for r in first.results if r.status == "error"]
        assert len(done) == 3 and len(failed) == 5
        assert "gave up after 3 tries" in failed[0].error

        server.restart()
        asked_before = len(server.completions())
        second = orchestra.run(recipe, task, out=out, cache=tmp_path / "cache.sqlite")
        assert all(r.status == "ok" for r in second.results) and second.accuracy == 1.0
        assert second.summary.resumed == 3
        assert len(server.completions()) - asked_before == 5  # only the problems that had failed
        assert set(statuses(out).values()) == {"ok"}


def _restart_after_failures(server: FakeOpenAIServer, failures: int) -> None:
    """Restart `server` once it has died and the (only) loaded backend has counted `failures` against it."""
    deadline = time.monotonic() + 120  # only ends a broken run
    while time.monotonic() < deadline:
        endpoints = [e for b in list(backends_base._LOADED.values()) for e in getattr(getattr(b, "pool", None), "endpoints", ())]
        if server._stopped.is_set() and any(e.failures >= failures for e in endpoints):
            server.restart()
            return
        time.sleep(0.01)


def test_a_server_back_within_the_retry_window_costs_no_problem(tmp_path):
    task = write_sums(tmp_path / "sums.jsonl", 6)
    with FakeOpenAIServer() as server:
        server.fail_after = 2
        server.delay = 0.05
        # back up once the client has met the dead server twice: within its retries however loaded the machine
        restarter = threading.Thread(target=_restart_after_failures, args=(server, 2), daemon=True)
        restarter.start()
        try:
            result = orchestra.run(
                remote_vote(server, retries=8, backoff=0.2, max_backoff=0.5), task, cache=False, concurrency=2
            )
        finally:
            restarter.join(timeout=120)
        assert [r.status for r in result.results] == ["ok"] * 6 and result.accuracy == 1.0
        [backend] = backends_base._LOADED.values()
        assert backend.pool.endpoints[0].failures >= 2  # it really was down for a while


def test_when_one_of_two_servers_dies_the_other_finishes_the_run(tmp_path):
    task = write_sums(tmp_path / "sums.jsonl", 10)
    with FakeOpenAIServer() as doomed, FakeOpenAIServer() as steady:
        doomed.fail_after = 2
        doomed.delay = steady.delay = 0.05
        result = orchestra.run(remote_vote(doomed, steady, retries=3), task, cache=False, concurrency=4)
        assert all(r.status == "ok" for r in result.results) and result.accuracy == 1.0
        assert len(steady.completions()) >= 10 - 2
        [backend] = backends_base._LOADED.values()
        dead = next(e for e in backend.pool.endpoints if e.url == doomed.url)
        assert dead.failures >= 1 and dead.ok == 2


def test_the_example_recipe_spreads_its_calls_over_its_endpoints(tmp_path):
    """recipes/remote_vote.yaml as shipped, pointed at two loopback servers instead of its ports
    (and named as they name their model, so no tokenizer is loaded: estimates by rule of thumb)."""
    shipped = orchestra.load_recipe(Path(__file__).resolve().parent.parent / "recipes/remote_vote.yaml")
    task = write_sums(tmp_path / "sums.jsonl", 8)
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        a.delay = b.delay = 0.05
        spec = shipped.models["small"]
        options = spec.openai.model_copy(update={"endpoints": (a.url, b.url)})
        spec = spec.model_copy(update={"openai": options, "model": "fake-served"})
        recipe = shipped.model_copy(update={"models": {"small": spec}})
        backends_base._LOADED.clear()
        result = orchestra.run(recipe, task, cache=False)
        assert result.accuracy == 1.0
        assert len(a.completions()) >= 2 and len(b.completions()) >= 2
        assert len(a.completions()) + len(b.completions()) == 8


def test_the_cli_says_when_token_counts_are_estimates(tmp_path):
    from typer.testing import CliRunner

    from orchestra.cli import app

    task = write_sums(tmp_path / "sums.jsonl", 3)
    with FakeOpenAIServer() as server:
        server.usage = False
        recipe_file = tmp_path / "remote.yaml"
        recipe_file.write_text(remote_vote(server, n=2).to_yaml())
        outcome = CliRunner().invoke(
            app, ["run", str(recipe_file), "--task", task, "--no-cache", "--out", str(tmp_path / "run")]
        )
    assert outcome.exit_code == 0, outcome.output
    assert "token counts of 3 calls are estimates" in outcome.output
