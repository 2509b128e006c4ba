"""Search studies on the fake model: replay, successive halving, constraints, resume, the CLI."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from fake_backend import fake_backend  # noqa: F401
from search_fixtures import fake_space, write_split_sums
from typer.testing import CliRunner

from orchestra import cli
from orchestra.cache import GenerationCache
from orchestra.recipe import load_recipe
from orchestra.search.evaluate import Pruned, evaluate, rung_sizes
from orchestra.search.objectives import Objective
from orchestra.search.outputs import best_trial, pareto_front, replay_summary, trials_to_best, write_trials_csv
from orchestra.search.space import space_from_dict
from orchestra.search.study import (
    SearchError, SearchSettings, fail_orphaned_trials, open_study, run_worker, storage_url,
)
from orchestra.tasks import load_task


def _recipe(space, **params):
    return space.suggest(optuna.trial.FixedTrial(params))


def _sample_calls(log) -> int:
    return sum(c.n for c in log.calls if "Compute" in c.prompt and "Answer" not in c.prompt.split("Compute", 1)[0])


def test_a_trial_that_differs_downstream_generates_nothing_new(tmp_path: Path, fake_backend) -> None:
    space = space_from_dict(fake_space())
    task = load_task(write_split_sums(tmp_path / "sums.jsonl", dev=4))
    problems = task.problems("dev")
    cache = GenerationCache(tmp_path / "cache.sqlite")
    objective = Objective()
    vote8 = _recipe(space, **{"gen.sample.n": 8, "gen.sample.temperature": 0.5, "check": "none",
                              "select[majority_vote|certainty|rank|fuse]": "majority_vote"})
    first = asyncio.run(evaluate(vote8, task, problems, objective, cache=cache))
    assert first.samples_generated == 8 * 4 and first.samples_replayed == 0 and first.accuracy == 1.0
    calls = len(fake_backend.log.calls)
    # same generation layer, different selector: every sample replayed, not one generated
    certainty4 = _recipe(space, **{"gen.sample.n": 4, "gen.sample.temperature": 0.5, "check": "none",
                                   "select[majority_vote|certainty|rank|fuse]": "certainty"})
    second = asyncio.run(evaluate(certainty4, task, problems, objective, cache=cache))
    assert second.samples_generated == 0 and second.samples_replayed == 4 * 4
    assert len(fake_backend.log.calls) == calls
    # logical cost does not depend on replay: n=4 costs half the completion tokens of n=8's pool
    assert 0 < second.cost < first.cost
    # a different temperature is a different pool
    other = _recipe(space, **{"gen.sample.n": 4, "gen.sample.temperature": 0.8, "check": "none",
                              "select[majority_vote|certainty|rank|fuse]": "majority_vote"})
    third = asyncio.run(evaluate(other, task, problems, objective, cache=cache))
    assert third.samples_generated == 16
    cache.close()


def test_rungs_and_pruning_stop_weak_recipes_early(tmp_path: Path, fake_backend) -> None:
    assert rung_sizes(20, 5, 2) == [5, 10, 20]
    assert rung_sizes(12, 5, 3) == [5, 12]
    assert rung_sizes(4, 5, 2) == [4] and rung_sizes(7, None, 2) == [7]
    with pytest.raises(ValueError):
        rung_sizes(0, 5, 2)

    class Judge:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return self.reports[-1][1] < 0.5

    space = space_from_dict(fake_space())
    task = load_task(write_split_sums(tmp_path / "sums.jsonl", dev=8))
    weak = _recipe(space, **{"gen.sample.n": 1, "gen.sample.temperature": 0.5, "check": "none",
                             "select[majority_vote|certainty|rank|fuse]": "majority_vote"})
    judge = Judge()
    with pytest.raises(Pruned) as stop:
        asyncio.run(evaluate(weak, task, task.problems("dev"), Objective(), rungs=[2, 4, 8], trial=judge))
    assert judge.reports == [(2, 0.0)] and stop.value.evaluation.problems == 2
    assert sum(c.n for c in fake_backend.log.calls) == 2  # the other 6 problems never ran


def _settings(tmp_path: Path, task: str, **changes) -> SearchSettings:
    values = dict(
        space=space_from_dict(fake_space()), task=task, trials=8, dev_limit=8, first_rung=2,
        storage=storage_url(None, tmp_path), study_name="s", cache=str(tmp_path / "cache.sqlite"), seed=1,
        heartbeat_seconds=1,
    )
    values.update(changes)
    return SearchSettings(**values)


def test_study_prunes_keeps_feasible_best_and_accounts_replay(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=8)
    settings = _settings(tmp_path, task, trials=14, objective=Objective(budget=60))
    study = run_worker(settings)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == 14
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.user_attrs["problems"] < 8 for t in pruned if "duplicate_of" not in t.user_attrs)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    best = best_trial(study, settings.objective)
    assert best is not None and best.user_attrs["cost"] <= 60
    assert best.user_attrs["accuracy"] == max(t.user_attrs["accuracy"] for t in complete if t.user_attrs["cost"] <= 60)
    over = [t for t in complete if t.user_attrs["cost"] > 60]
    assert over and all(t.user_attrs["feasible"] is False for t in over)
    assert all(study._storage.get_trial(t._trial_id).constraints for t in complete)
    summary = replay_summary(study)
    assert summary.samples_replayed > 0 and summary.replayed_trials > 0
    trials, evaluations = trials_to_best(study)
    assert 1 <= evaluations <= trials <= 14
    front = pareto_front([t for t in finished if t.state == optuna.trial.TrialState.COMPLETE])
    assert [t.user_attrs["cost"] for t in front] == sorted(t.user_attrs["cost"] for t in front)


def _killed_worker(settings: SearchSettings, tmp_path: Path, index: int) -> None:
    """A worker process (tests/search_worker.py) that stops inside a trial, then is killed
    with SIGKILL: its trial stays RUNNING in the study, as after a crash or an OOM kill."""
    (tmp_path / "settings.json").write_text(settings.model_dump_json())
    hang = tmp_path / "hang"
    hang.mkdir()
    (hang / "hang").touch()  # its first model call never returns
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "search_worker.py"), str(tmp_path / "settings.json"), str(index), "0"],
        env={**os.environ, "SEARCH_WORKER_HANG_DIR": str(hang)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 240
    while not (hang / "hung").exists():  # waits for the event, not for time to pass
        assert worker.poll() is None, worker.communicate()[0]
        assert time.monotonic() < deadline, "the worker never reached a model call"
        time.sleep(0.05)
    worker.kill()
    worker.wait()


def test_a_rerun_fails_and_retries_a_killed_workers_trial_at_once(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=4)
    # a heartbeat of 60 s: the killed worker's trial is not stale for two minutes, so only the
    # worker's recorded process (gone) can tell the rerun that the trial is orphaned
    settings = functools.partial(_settings, tmp_path, task, first_rung=None, dev_limit=4, heartbeat_seconds=60)
    first = run_worker(settings(trials=3))
    before = {t.number: t.datetime_complete for t in first.trials}
    assert len(before) == 3
    _killed_worker(settings(trials=6), tmp_path, index=1)
    [orphan] = open_study(settings()).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert orphan.user_attrs["worker_process"]["trial"] == orphan.number

    resumed = run_worker(settings(trials=6))
    states = {t.number: t.state for t in resumed.trials}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert optuna.trial.TrialState.RUNNING not in states.values()
    finished = [t for t in resumed.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 6
    assert all(resumed.trials[n].datetime_complete == stamp for n, stamp in before.items())
    # the failed trial was retried with its parameters
    [retried] = [t for t in resumed.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retried.params == orphan.params and retried.state == optuna.trial.TrialState.COMPLETE
    rows = list(csv.DictReader(write_trials_csv(resumed, tmp_path / "trials.csv").open()))
    assert rows[orphan.number]["state"] == "FAIL"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_rerun_leaves_the_trials_of_live_workers_and_other_machines_running(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=4)
    study = open_study(_settings(tmp_path, task, heartbeat_seconds=60))
    alive, elsewhere, copied = study.ask(), study.ask(), study.ask()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}
    gone = {**me, "pid": 2**22 + 1}  # above Linux's largest pid: never running
    alive.set_user_attr("worker_process", {**me, "trial": alive.number})  # this test's own process runs it
    elsewhere.set_user_attr("worker_process", {**gone, "host": "another-machine", "trial": elsewhere.number})
    # a retry copies its failed trial's attributes: the dead owner recorded there is not this trial's
    copied.set_user_attr("worker_process", {**gone, "trial": alive.number})
    assert fail_orphaned_trials(study) == []
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    copied.set_user_attr("worker_process", {**gone, "trial": copied.number})
    assert fail_orphaned_trials(study) == [copied.number]
    assert fail_orphaned_trials(study) == []  # failed once, retried once
    assert [t.system_attrs["failed_trial"] for t in study.trials if t.state == optuna.trial.TrialState.WAITING] == [copied.number]


def test_joining_a_study_of_another_search_is_refused(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=4)
    open_study(_settings(tmp_path, task))
    with pytest.raises(SearchError, match="different search"):
        open_study(_settings(tmp_path, task, objective=Objective(budget=10)))


def test_pareto_mode_with_nsga2(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=4)
    settings = _settings(tmp_path, task, trials=6, dev_limit=4, sampler="nsga2", objective=Objective(pareto=True))
    study = run_worker(settings)
    assert not settings.pruning
    assert len(study.directions) == 2 and study.best_trials
    for t in study.best_trials:
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["cost"]]


def test_cli_search_writes_best_recipe_trials_plot_and_study(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=6, test=4)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space()))
    baseline = tmp_path / "greedy.yaml"
    baseline.write_text(yaml.safe_dump({
        "name": "greedy", "models": {"m": {"backend": "fake", "model": "fake-model"}},
        "nodes": [{"id": "a", "technique": "sample", "params": {"n": 1, "temperature": 0, "max_tokens": 32}}]}))
    out = tmp_path / "out"
    args = ["search", str(space), "--task", task, "--trials", "6", "--dev-limit", "6", "--first-rung", "2",
            "--budget", "80", "--out", str(out), "--cache", str(tmp_path / "c.sqlite"),
            "--test-limit", "4", "--compare", str(baseline)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    for name in ("best.yaml", "trials.csv", "pareto.png", "study.db"):
        assert (out / name).exists(), name
    best = load_recipe(out / "best.yaml")
    assert best.nodes[0].technique == "sample"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) >= 6 and {"accuracy", "cost", "samples_generated", "samples_replayed"} <= set(rows[0])
    assert "test · 4 problems" in result.output and "greedy" in result.output
    summary = json.loads((out / "summary.json").read_text())
    winner = summary["winner"]
    assert winner["rule"] in ("only_configuration", "significantly_best", "cheapest_of_tied")
    assert winner["trial"] in winner["tied"] and winner["dev_problems"] == 6
    assert winner["dev_accuracy"]["low"] <= winner["dev_accuracy"]["estimate"] <= winner["dev_accuracy"]["high"]
    assert f"trial {winner['trial']}" in " ".join(result.output.split())
    test = summary["test"]
    # the compared recipe named greedy is the baseline (not run twice), last, with no difference to itself
    assert test["problems"] == 4 and [r["recipe"] for r in test["rows"]] == ["searched (fake_space)", "greedy"]
    searched, greedy = test["rows"]
    assert greedy["versus_greedy"] is None and searched["versus_greedy"]["problems"] == 4
    assert searched["versus_greedy"]["estimate"] == pytest.approx(
        searched["accuracy"]["estimate"] - greedy["accuracy"]["estimate"])
    assert "vs greedy" in result.output
    # the same command again resumes: nothing left to run, same outputs
    again = CliRunner().invoke(cli.app, args)
    assert again.exit_code == 0, again.output
    assert "resuming: 6 trials already finished" in " ".join(again.output.split()), again.output
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == len(rows)
    # and the best recipe runs
    run = CliRunner().invoke(cli.app, ["run", str(out / "best.yaml"), "--task", task, "--split", "dev", "--limit", "2",
                                       "--out", str(tmp_path / "run"), "--no-cache"])
    assert run.exit_code == 0, run.output


def test_cli_search_errors(tmp_path: Path, fake_backend) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space(layers=[{"id": "gen", "options": [{"technique": "smaple"}]}])))
    result = CliRunner().invoke(cli.app, ["search", str(space), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "smaple" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(fake_space()))
    assert CliRunner().invoke(cli.app, ["search", str(good), "--cost", "watts"]).exit_code == 2
    assert CliRunner().invoke(cli.app, ["search", str(good), "--sampler", "nsga2"]).exit_code == 2


def test_engine_knobs_are_searched_for_wall_time_without_replay(tmp_path: Path, fake_backend) -> None:
    task = write_split_sums(tmp_path / "sums.jsonl", dev=3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space(knobs={"models.m.max_batch_size": {"choices": [2, 8]}})))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["search", str(space), "--task", task, "--trials", "4", "--dev-limit", "3",
                                          "--first-rung", "0", "--cost", "seconds", "--pareto", "--out", str(out),
                                          "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 0, result.output
    assert "replay is off" in result.output
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert {r["models.m.max_batch_size"] for r in rows} <= {"2", "8"} and all(r["models.m.max_batch_size"] for r in rows)
    ran = [r for r in rows if not r["duplicate_of"]]
    assert all(r["samples_generated"] == "" and r["samples_replayed"] == "0" for r in ran)
    assert not (tmp_path / "c.sqlite").exists()
    best = load_recipe(out / "best.yaml")
    assert best.models["m"].max_batch_size in (2, 8)


#: A fake backend whose first call in each process waits until two processes have made one.
_MEETING_FAKE = """
import asyncio, os, time
from pathlib import Path

from fake_backend import FakeBackend

ARRIVED = Path({arrived!r})


class SlowFake(FakeBackend):
    async def complete(self, request, prepared):
        ARRIVED.mkdir(exist_ok=True)
        (ARRIVED / str(os.getpid())).touch()
        deadline = time.monotonic() + 600
        while len(list(ARRIVED.iterdir())) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await super().complete(request, prepared)
"""


def test_cli_workers_processes_share_the_study(tmp_path: Path, fake_backend, monkeypatch) -> None:
    # Spawned workers are fresh interpreters: they find the fake backend the way a
    # third-party backend is found, through an entry point on sys.path (spawn passes sys.path on).
    plugin = tmp_path / "plugin"
    info = plugin / "orchestra_fake_backend-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: orchestra-fake-backend\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[orchestra.backends]\nfake = slow_fake:SlowFake\n")
    # Each worker's first call waits until the other worker has made one too: both take part, however
    # far apart the two processes start (no waiting on a clock; the deadline only ends a broken run).
    (plugin / "slow_fake.py").write_text(_MEETING_FAKE.format(arrived=str(tmp_path / "arrived")))
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    task = write_split_sums(tmp_path / "sums.jsonl", dev=3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space()))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["search", str(space), "--task", task, "--trials", "6", "--dev-limit", "3",
                                          "--first-rung", "0", "--workers", "2", "--out", str(out),
                                          "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="fake_space", storage=f"sqlite:///{out / 'study.db'}")
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7
    assert len({t.user_attrs["worker"] for t in finished}) == 2
    assert (out / "best.yaml").exists()
