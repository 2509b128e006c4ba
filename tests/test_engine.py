"""The engine with a scripted backend: voting, provenance, failures, run folders, resume, cache,
usage accounting, concurrency and the Python API. No model; fast."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fake_backend import (  # noqa: F401  (fake_backend is a fixture)
    OFFSETS,
    FakeBackend,
    fake_backend,
    sample_tokens,
    vote_recipe,
    write_sums,
)
from typer.testing import CliRunner

import orchestra
from orchestra.backends import GenerationRequest
from orchestra.budget import Limits, Meter
from orchestra.cache import GenerationCache
from orchestra.context import Ledger, ModelHandle
from orchestra.backends import get_backend
from orchestra.executor import Executor, node_seed
from orchestra.problem import Message, Problem
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe
from orchestra.results import RunResult
from orchestra.run_folder import RunFolder, RunFolderMismatch
from orchestra.tasks import load_task
from orchestra.usage import Usage


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def traces(folder: Path) -> dict[tuple[str, str], dict]:
    return {(t["problem_id"], t["node"]): t for t in lines(folder / "trace.jsonl")}


def recipe(**kwargs) -> Recipe:
    return Recipe.model_validate(vote_recipe(**kwargs))


@pytest.fixture
def sums(tmp_path: Path):
    """A factory: sums(count, extra={row: words}) -> task spec of a fresh JSONL file."""

    def make(count: int, extra: dict[int, str] | None = None) -> str:
        return write_sums(tmp_path / f"sums{count}.jsonl", count, extra=extra)

    return make


# --- voting and provenance ----------------------------------------------------------------


def test_majority_vote_picks_the_most_common_answer(tmp_path: Path, fake_backend, sums) -> None:
    spec = sums(3)
    result = orchestra.run(recipe(n=4), spec, out=tmp_path / "run", cache=False)
    task = load_task(spec)
    for problem, r in zip(task.problems("test"), result.results):
        correct = int(problem.answer)
        # samples answer c+1, c, c+2, c: the majority (c) is not the first sample's answer
        assert [correct + OFFSETS[k] for k in range(4)] == [correct + 1, correct, correct + 2, correct]
        assert r.status == "ok"
        assert r.answer == str(correct)
        assert r.score == 1.0 and r.coverage
        assert r.output_candidates == 3  # one candidate per distinct answer
    assert result.accuracy == 1.0


def test_first_sample_alone_would_be_wrong(tmp_path: Path, fake_backend, sums) -> None:
    """The control for the vote: the same samples without the vote score 0, yet coverage is 1."""
    plain = Recipe.model_validate(
        {**vote_recipe(n=4), "nodes": [vote_recipe(n=4)["nodes"][0]], "output": "samples"}
    )
    result = orchestra.run(plain, sums(2), cache=False)
    assert all(r.score == 0.0 and r.coverage for r in result.results)


def test_partial_credit_is_neither_correct_nor_coverage(tmp_path: Path, fake_backend, sums) -> None:
    """A task half-crediting every wrong answer: the one sample (c+1) scores 0.5, which is wrong."""
    task = load_task(sums(2))
    exact = task.score
    task.score = lambda problem, text, answer: max(0.5, exact(problem, text, answer))  # type: ignore[method-assign]
    first = Recipe.model_validate({**vote_recipe(n=1), "nodes": [vote_recipe(n=1)["nodes"][0]], "output": "samples"})
    result = orchestra.run(first, task, cache=False)
    assert [(r.score, r.correct, r.coverage) for r in result.results] == [(0.5, False, False)] * 2
    assert result.accuracy == 0.0 and result.summary.partial_credit == 0.5 and result.summary.tokens_per_correct is None


def test_vote_provenance_in_trace(tmp_path: Path, fake_backend, sums) -> None:
    out = tmp_path / "run"
    orchestra.run(recipe(n=4), sums(2), out=out, cache=False)
    found = traces(out)
    for pid in ("p0", "p1"):
        samples, vote = found[(pid, "samples")], found[(pid, "vote")]
        sample_ids = [c["id"] for c in samples["outputs"]]
        assert len(set(sample_ids)) == 4
        assert vote["inputs"] == sample_ids
        assert samples["inputs"] == []
        winner, *others = vote["outputs"]
        # the winner's parents are exactly its voters: samples 1 and 3
        assert winner["parents"] == [sample_ids[1], sample_ids[3]]
        assert winner["scores"]["votes"] == pytest.approx(0.5)
        assert winner["node"] == "vote" and winner["id"] not in sample_ids
        assert [o["parents"] for o in others] == [[sample_ids[0]], [sample_ids[2]]]
        assert all(c["node"] == "samples" and c["model"] == "m" for c in samples["outputs"])
        assert vote["technique"] == "majority_vote" and vote["error"] is None


def test_samples_carry_token_counts_and_logprobs(tmp_path: Path, fake_backend, sums) -> None:
    out = tmp_path / "run"
    orchestra.run(recipe(n=4), sums(1), out=out, cache=False)
    samples = traces(out)[("p0", "samples")]["outputs"]
    assert [c["completion_tokens"] for c in samples] == [sample_tokens("", 0, k) for k in range(4)]
    assert all(c["prompt_tokens"] == 20 for c in samples)
    # the handle asks a logprobs-capable backend for logprobs, one per token
    assert all(len(c["logprobs"]) == c["completion_tokens"] for c in samples)


def test_best_of_n_by_mean_logprob(tmp_path: Path, fake_backend, sums) -> None:
    rec = Recipe.model_validate({
        "name": "bon",
        "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": 4}},
            {"id": "best", "technique": "best_of_n", "inputs": ["samples"], "params": {"scorer": "mean_logprob"}},
        ],
    })
    out = tmp_path / "run"
    orchestra.run(rec, sums(1), out=out, cache=False)
    found = traces(out)
    samples = found[("p0", "samples")]["outputs"]
    (best,) = found[("p0", "best")]["outputs"]
    means = {c["id"]: sum(c["logprobs"]) / len(c["logprobs"]) for c in samples}
    assert best["id"] == max(means, key=means.get)  # scoring keeps the id
    assert best["scores"]["mean_logprob"] == pytest.approx(max(means.values()))


# --- failures ------------------------------------------------------------------------------


def test_node_failure_for_one_problem_leaves_others_ok(tmp_path: Path, fake_backend, sums) -> None:
    out = tmp_path / "run"
    result = orchestra.run(recipe(n=4), sums(4, extra={2: "EXPLODE"}), out=out, cache=False)
    statuses = {r.problem_id: r for r in result.results}
    assert [r.status for r in result.results] == ["ok", "ok", "error", "ok"]
    bad = statuses["p2"]
    assert bad.error is not None and "RuntimeError" in bad.error and "EXPLODE" in bad.error
    assert bad.answer is None and bad.score == 0.0 and bad.cut_short is None
    assert result.summary.errors == 1 and not result.summary.complete  # the failed one waits for a resume
    assert result.summary.accuracy == pytest.approx(0.75)
    trace = traces(out)[("p2", "samples")]
    assert "RuntimeError" in trace["error"] and trace["outputs"] == []
    assert ("p2", "vote") not in traces(out)  # the problem stopped at the failing node


def test_errors_are_retried_on_resume(tmp_path: Path, fake_backend, sums) -> None:
    spec, out = sums(3), tmp_path / "run"
    fake_backend.fail_when = lambda request, prompt: "Compute 3 + 3" in prompt  # p1
    first = orchestra.run(recipe(), spec, out=out, cache=False)
    assert [r.status for r in first.results] == ["ok", "error", "ok"]
    fake_backend.fail_when = None
    calls = len(fake_backend.log.calls)
    second = orchestra.run(recipe(), spec, out=out, cache=False)
    assert [r.status for r in second.results] == ["ok", "ok", "ok"]
    assert len(fake_backend.log.calls) - calls == 1  # only the failed problem ran again


def test_failed_node_does_not_leave_siblings_running(tmp_path: Path, fake_backend, sums) -> None:
    rec = Recipe.model_validate({
        "name": "siblings",
        "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "fails", "technique": "sample", "params": {"n": 2, "max_tokens": 13}},
            {"id": "slow", "technique": "sample", "params": {"n": 2, "max_tokens": 32}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["fails", "slow"]},
        ],
    })
    # p0: `fails` raises at once while its sibling `slow` takes 0.05 s; p1 (next, concurrency 1) takes 0.2 s.
    fake_backend.fail_when = lambda request, prompt: request.max_tokens == 13 and "2 + 1" in prompt
    fake_backend.delay = lambda request, prompt: 0.0 if request.max_tokens == 13 else (0.05 if "2 + 1" in prompt else 0.2)
    task = load_task(sums(2))
    engine = Executor(rec, task=task, folder=RunFolder(tmp_path / "run"), concurrency=1)
    result = asyncio.run(engine.run(task.problems("test")))
    assert [r.status for r in result.results] == ["error", "ok"]
    reported = sum((r.usage for r in result.results), Usage())
    assert engine.run_meter.used.completion_tokens == reported.completion_tokens


# --- run folder and resume -----------------------------------------------------------------


def test_run_folder_files(tmp_path: Path, fake_backend, sums) -> None:
    out = tmp_path / "run"
    rec = recipe()
    spec = sums(4)
    result = orchestra.run(rec, spec, out=out, cache=False)
    assert result.out == str(out)
    meta = json.loads((out / "run.json").read_text())
    assert meta["fingerprint"] == rec.fingerprint() and meta["task"] == spec and meta["split"] == "test"
    assert Recipe.model_validate(meta["definition"]) == rec
    results = lines(out / "results.jsonl")
    assert [r["problem_id"] for r in results] == ["p0", "p1", "p2", "p3"]
    trace = lines(out / "trace.jsonl")
    assert len(trace) == 4 * len(rec.nodes)
    assert {(t["problem_id"], t["node"]) for t in trace} == {(p, n) for p in ("p0", "p1", "p2", "p3") for n in ("samples", "vote")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 4 and summary["complete"] is True and summary["accuracy"] == 1.0
    assert summary == json.loads(result.summary.model_dump_json())


def test_resume_runs_only_new_problems(tmp_path: Path, fake_backend, sums) -> None:
    spec, out = sums(5), tmp_path / "run"
    first = orchestra.run(recipe(), spec, limit=3, out=out, cache=False)
    assert len(first.results) == 3 and len(fake_backend.log.calls) == 3
    seen: list[str] = []
    second = orchestra.run(recipe(), spec, limit=5, out=out, cache=False, on_result=lambda r: seen.append(r.problem_id))
    assert len(fake_backend.log.calls) == 3 + 2  # only p3 and p4 ran
    assert {c.prompt.split("\n")[0] for c in fake_backend.log.calls[3:]} == {"user: Compute 5 + 7 =", "user: Compute 6 + 9 ="}
    assert [r.problem_id for r in second.results] == ["p0", "p1", "p2", "p3", "p4"]
    assert [r.model_dump() for r in second.results[:3]] == [r.model_dump() for r in first.results]
    assert sorted(seen) == ["p0", "p1", "p2", "p3", "p4"]  # resumed results are reported too
    assert len(lines(out / "results.jsonl")) == 5
    assert json.loads((out / "summary.json").read_text())["problems"] == 5
    assert second.summary.resumed == 3
    by_node = second.summary.usage_by_node
    assert by_node["samples"].calls == 5 and "vote" not in by_node  # voting spends no model calls
    assert by_node["samples"] == second.summary.usage == second.summary.usage_by_model["m"]
    third = orchestra.run(recipe(), spec, limit=5, out=out, cache=False)
    assert len(fake_backend.log.calls) == 5 and third.accuracy == 1.0  # nothing left to do


def test_folder_of_a_different_recipe_refuses_to_resume(tmp_path: Path, fake_backend, sums) -> None:
    spec, out = sums(2), tmp_path / "run"
    orchestra.run(recipe(n=4), spec, out=out, cache=False)
    with pytest.raises(RunFolderMismatch, match="fingerprint"):
        orchestra.run(recipe(n=2), spec, out=out, cache=False)
    with pytest.raises(RunFolderMismatch, match="task"):
        orchestra.run(recipe(n=4), sums(3), out=out, cache=False)
    # a description change is not a different recipe
    same = Recipe.model_validate({**vote_recipe(n=4), "description": "now documented"})
    assert orchestra.run(same, spec, out=out, cache=False).accuracy == 1.0


# --- generation cache ----------------------------------------------------------------------


def test_cache_replays_a_whole_run(tmp_path: Path, fake_backend, sums) -> None:
    spec, cache = sums(3), tmp_path / "cache.sqlite"
    first = orchestra.run(recipe(), spec, out=tmp_path / "a", cache=cache)
    assert len(fake_backend.log.calls) == 3 and first.summary.usage.cache_hits == 0
    second = orchestra.run(recipe(), spec, out=tmp_path / "b", cache=cache)
    assert len(fake_backend.log.calls) == 3  # zero new backend calls
    assert second.summary.usage.cache_hits == 3 * 4
    for a, b in zip(first.results, second.results):
        assert (a.answer, a.text, a.score) == (b.answer, b.text, b.score)
        for name in ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "flops"):
            assert getattr(a.usage, name) == getattr(b.usage, name), name  # logical cost, cache or not
        assert b.usage.cache_hits == 4
    first_texts = [c["text"] for c in traces(tmp_path / "a")[("p0", "samples")]["outputs"]]
    second_texts = [c["text"] for c in traces(tmp_path / "b")[("p0", "samples")]["outputs"]]
    assert first_texts == second_texts
    assert GenerationCache(cache).count() == 12


def test_cache_is_keyed_by_sampling_settings_and_seed(tmp_path: Path, fake_backend, sums) -> None:
    spec, cache = sums(1), tmp_path / "cache.sqlite"
    orchestra.run(recipe(), spec, cache=cache)
    orchestra.run(recipe(max_tokens=32), spec, cache=cache)  # other max_tokens
    orchestra.run(recipe(seed=1), spec, cache=cache)  # other recipe seed -> other node seed
    assert len(fake_backend.log.calls) == 3
    seeds = [c.seed for c in fake_backend.log.calls]
    assert seeds[0] == node_seed(0, "p0", "samples") == seeds[1] != seeds[2] == node_seed(1, "p0", "samples")


def test_larger_n_extends_cached_samples(tmp_path: Path, fake_backend, sums) -> None:
    spec, cache = sums(2), tmp_path / "cache.sqlite"
    small = orchestra.run(recipe(n=4), spec, out=tmp_path / "a", cache=cache)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls] == [(0, 4), (0, 4)]
    big = orchestra.run(recipe(n=8), spec, out=tmp_path / "b", cache=cache)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls[2:]] == [(4, 4), (4, 4)]
    for r in big.results:
        assert r.usage.cache_hits == 4
        assert r.usage.completion_tokens == sum(sample_tokens("", 0, k) for k in range(8))
    for pid in ("p0", "p1"):
        four = [c["text"] for c in traces(tmp_path / "a")[(pid, "samples")]["outputs"]]
        eight = [c["text"] for c in traces(tmp_path / "b")[(pid, "samples")]["outputs"]]
        assert eight[:4] == four and len(set(eight)) == 8
    assert small.accuracy == big.accuracy == 1.0


def handle(tmp_path: Path) -> ModelHandle:
    backend = FakeBackend(ModelSpec(backend="fake"))
    ledger = Ledger([Meter("per-problem", Limits())])
    return ModelHandle("m", backend, ledger, "node", GenerationCache(tmp_path / "c.sqlite"))


MESSAGES = (Message(role="user", content="Compute 1 + 1 ="),)


def test_unseeded_requests_are_never_cached(tmp_path: Path, fake_backend) -> None:
    h = handle(tmp_path)
    request = GenerationRequest(messages=MESSAGES, n=2, seed=None)
    for _ in range(2):
        result = asyncio.run(h.generate(request))
        assert result.usage.cache_hits == 0
    assert len(fake_backend.log.calls) == 2 and h.cache.count() == 0


def test_handle_books_usage_to_node_and_model(tmp_path: Path, fake_backend) -> None:
    h = handle(tmp_path)
    result = asyncio.run(h.generate(GenerationRequest(messages=MESSAGES, n=2, seed=3, max_tokens=20)))
    assert h.ledger.total == h.ledger.by_node["node"] == h.ledger.by_model["m"] == result.usage
    assert result.usage.completion_tokens == sample_tokens("", 3, 0) + sample_tokens("", 3, 1)
    assert h.ledger.meters[0].reserved == Usage()


def test_cache_hits_count_only_replayed_samples(tmp_path: Path, fake_backend) -> None:
    h = handle(tmp_path)

    def generate(first_index: int, n: int):
        request = GenerationRequest(messages=MESSAGES, n=n, first_index=first_index, seed=5, max_tokens=20)
        return asyncio.run(h.generate(request))

    generate(3, 1)  # caches sample 3
    generate(0, 2)  # caches samples 0, 1
    result = generate(0, 4)  # sample 2 is missing
    call = fake_backend.log.calls[-1]
    regenerated = call.n
    assert result.usage.cache_hits == 4 - regenerated


# --- usage accounting ----------------------------------------------------------------------


def test_usage_by_node_and_by_model_add_up(tmp_path: Path, fake_backend, sums) -> None:
    rec = Recipe.model_validate({
        "name": "two-models",
        "models": {"small": {"backend": "fake", "model": "s"}, "big": {"backend": "fake", "model": "b"}},
        "nodes": [
            {"id": "a", "technique": "sample", "model": "small", "params": {"n": 3}},
            {"id": "b", "technique": "sample", "model": "big", "params": {"n": 2}},
            {"id": "c", "technique": "sample", "model": "big", "params": {"n": 1, "temperature": 0}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["a", "b", "c"]},
        ],
    })
    out = tmp_path / "run"
    result = orchestra.run(rec, sums(3), out=out, cache=False)
    assert {c.model for c in fake_backend.log.calls} == {"s", "b"}
    found = traces(out)
    for r in result.results:
        assert r.status == "ok"
        assert set(r.usage_by_node) == {"a", "b", "c"}  # vote needs no model, spends nothing
        assert set(r.usage_by_model) == {"small", "big"}
        for parts in (r.usage_by_node.values(), r.usage_by_model.values()):
            total = sum(parts, Usage())
            for name in ("calls", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cache_hits"):
                assert getattr(total, name) == getattr(r.usage, name), name
            assert total.flops == pytest.approx(r.usage.flops)
            assert total.seconds == pytest.approx(r.usage.seconds)
        assert r.usage.calls == 3
        assert r.usage_by_model["big"].calls == 2
        assert r.usage_by_node["a"].completion_tokens == sum(sample_tokens("", 0, k) for k in range(3))
        for node in ("a", "b", "c"):
            assert found[(r.problem_id, node)]["usage"]["completion_tokens"] == r.usage_by_node[node].completion_tokens
    summary = result.summary
    assert summary.usage.completion_tokens == sum(r.usage.completion_tokens for r in result.results)
    assert summary.tokens_per_problem == pytest.approx(summary.usage.total_tokens / 3)


def test_one_backend_per_model_spec(fake_backend) -> None:
    spec = ModelSpec(backend="fake", model="same")
    assert get_backend(spec) is get_backend(ModelSpec(backend="fake", model="same"))
    assert get_backend(spec) is not get_backend(ModelSpec(backend="fake", model="other"))
    assert fake_backend.log.instances == 2


# --- concurrency and the Python API --------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_bounds_problems_in_flight(tmp_path: Path, fake_backend, sums, concurrency: int) -> None:
    fake_backend.delay = 0.01
    result = orchestra.run(recipe(), sums(8), cache=False, concurrency=concurrency)
    assert len(result.results) == 8
    assert fake_backend.log.max_in_flight == concurrency


def test_nodes_of_one_layer_run_concurrently(tmp_path: Path, fake_backend, sums) -> None:
    fake_backend.delay = 0.01
    rec = Recipe.model_validate({
        "name": "wide",
        "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "a", "technique": "sample", "params": {"n": 1}},
            {"id": "b", "technique": "sample", "params": {"n": 1, "temperature": 0.1}},
            {"id": "c", "technique": "sample", "params": {"n": 1, "temperature": 0.2}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["a", "b", "c"]},
        ],
    })
    orchestra.run(rec, sums(1), cache=False, concurrency=1)
    assert fake_backend.log.max_in_flight == 3


def test_api_returns_results_in_problem_order(tmp_path: Path, fake_backend, sums) -> None:
    # p0 is held until the other three have finished, so it finishes last; results still come back in problem order.
    finished: list[str] = []
    fake_backend.hold = lambda request, prompt: "Compute 2 + 1" in prompt and len(finished) < 3
    result = orchestra.run(recipe(), sums(4), cache=False, concurrency=4, on_result=lambda r: finished.append(r.problem_id))
    assert isinstance(result, RunResult)
    assert [r.problem_id for r in result.results] == ["p0", "p1", "p2", "p3"]
    assert finished[-1] == "p0"
    assert result.summary.problems == 4 and result.summary.recipe == "vote"
    assert result.out is None


def test_api_with_own_problems_and_yaml_recipe(tmp_path: Path, fake_backend) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(recipe().to_yaml())
    problems = [Problem.from_prompt(f"q{i}", f"Compute {i} + {i} =", answer=str(2 * i)) for i in range(3)]
    task = load_task(write_sums(tmp_path / "any.jsonl", 1))  # used to extract and score answers
    result = orchestra.run(path, task, problems=problems, cache=False)
    assert [r.problem_id for r in result.results] == ["q0", "q1", "q2"]
    assert [r.answer for r in result.results] == ["0", "2", "4"]
    assert result.accuracy == 1.0
    limited = orchestra.run(path, task, problems=problems, limit=2, cache=False)
    assert len(limited.results) == 2


def test_api_without_task_or_problems_is_an_error(fake_backend) -> None:
    with pytest.raises(ValueError, match="give a task"):
        orchestra.run(recipe())


def test_arun_inside_a_running_loop(tmp_path: Path, fake_backend, sums) -> None:
    async def main():
        return await orchestra.arun(recipe(), sums(2), cache=False)

    assert asyncio.run(main()).accuracy == 1.0


def test_default_cache_lives_under_orchestra_home(tmp_path: Path, fake_backend, sums) -> None:
    spec = sums(1)
    orchestra.run(recipe(), spec)  # cache=True: $ORCHESTRA_HOME/generations.sqlite (tmp, via the fixture)
    assert (tmp_path / "orchestra-home" / "generations.sqlite").exists()
    second = orchestra.run(recipe(), spec)
    assert second.summary.usage.cache_hits == 4 and len(fake_backend.log.calls) == 1


def test_cli_run_end_to_end(tmp_path: Path, fake_backend, sums, monkeypatch) -> None:
    from orchestra import cli, terminal

    monkeypatch.setattr(terminal.console, "_width", 300)
    path = tmp_path / "r.yaml"
    path.write_text(recipe().to_yaml())
    out = tmp_path / "run"
    result = CliRunner().invoke(cli.app, ["run", str(path), "--task", sums(3), "--out", str(out), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "100.0%" in result.stdout
    assert f"results: {out}" in result.stdout
    assert len(lines(out / "results.jsonl")) == 3


def test_a_scorer_that_raises_fails_only_its_problem(tmp_path: Path, fake_backend, sums) -> None:
    task = orchestra.load_task(sums(3))
    real_score = task.score

    def flaky(problem, text, answer):
        if problem.id == "p1":
            raise RuntimeError("scorer bug")
        return real_score(problem, text, answer)

    task.score = flaky  # type: ignore[method-assign]
    result = orchestra.run(recipe(), task, cache=False)
    assert [r.status for r in result.results] == ["ok", "error", "ok"]
    assert "scoring failed: RuntimeError: scorer bug" in result.results[1].error
