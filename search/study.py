"""An optuna study over a search space: storage, sampler, pruner, and the worker loop.

A search is one optuna study in a storage: a SQLite file by default, or a
PostgreSQL database that several workers (processes or machines) join by
running the same command with the same `--storage` and study name. The search
settings are written into the study, so a worker that would search something
else is refused instead of mixing results. A trial whose worker died is marked
failed and retried with the same parameters: at once when a worker starts on
the same machine (each trial records its worker process, and a process that is
gone owns nothing), and otherwise once its heartbeat is stale. The study stops
at `trials` finished (complete or pruned) trials however many workers ran them,
so rerunning an interrupted search finishes it without redoing finished trials.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import optuna
import psutil
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from orchestra.cache import GenerationCache
from orchestra.oracle import marked
from orchestra.paths import default_cache_path
from orchestra.tasks import load_task
from orchestra.search.evaluate import Evaluation, Pruned, evaluate, rung_sizes
from orchestra.search.objectives import Objective
from orchestra.search.outcomes import to_json
from orchestra.search.space import SearchSpace, refuse_oracle_offers

SamplerName = Literal["tpe", "random", "nsga2"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SearchError(ValueError):
    """Settings that cannot run, or a study that belongs to another search."""


class SearchSettings(BaseModel):
    """Everything that defines one search; stored in the study so joining workers agree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: SearchSpace
    task: str
    objective: Objective = Field(default_factory=Objective)
    trials: int = Field(default=20, ge=1)
    dev_limit: int = Field(default=200, ge=1, description="Dev problems a fully evaluated trial runs.")
    first_rung: int | None = Field(default=25, ge=1, description="Problems of the first successive-halving rung; None: no pruning.")
    halving_factor: int = Field(default=2, ge=2)
    sampler: SamplerName = "tpe"
    seed: int = 0
    storage: str = Field(description="optuna storage URL (sqlite:///... or postgresql://...).")
    study_name: str = "orchestra-search"
    cache: str | None = Field(default=None, description="Generation cache path; None: the default cache.")
    replay: bool = Field(default=True, description="Read and write the generation cache (off: every trial generates afresh).")
    concurrency: int = Field(default=32, ge=1)
    heartbeat_seconds: int = Field(default=30, ge=1, description="How often a worker marks its running trial alive.")
    race_limit: int = Field(default=1000, ge=0, description="Dev problems racing may extend statistically tied configurations to (capped by the split).")
    race_chunk: int = Field(default=100, ge=1, description="Dev problems each racing round adds to the tied configurations.")
    allow_oracle: bool = Field(default=False, description="Search a space that offers an oracle scorer (measurement only; see orchestra.oracle).")

    @model_validator(mode="after")
    def _no_answer_key(self) -> SearchSettings:
        refuse_oracle_offers(self.space, allow=self.allow_oracle, source=f"search space {self.space.name!r}")
        return self

    def identity(self) -> dict:
        """The settings that make two workers' trials comparable."""
        return self.model_dump(
            mode="json",
            include={"space", "task", "objective", "dev_limit", "first_rung", "halving_factor"},
        )

    @property
    def pruning(self) -> bool:
        # optuna cannot prune multi-objective studies; successive halving needs one value per rung.
        return self.first_rung is not None and not self.objective.pareto and self.first_rung < self.dev_limit


def storage_url(storage: str | None, out: Path) -> str:
    """A storage URL: default SQLite in the output folder; a bare path is a SQLite file;
    `postgresql://` gets the psycopg 3 driver."""
    if storage is None:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    if storage.startswith("postgresql://") or storage.startswith("postgres://"):
        return "postgresql+psycopg://" + storage.split("://", 1)[1]
    if "://" not in storage:
        return f"sqlite:///{Path(storage).resolve()}"
    return storage


def open_storage(url: str, heartbeat_seconds: int) -> RDBStorage:
    # grace: a trial is declared dead after two missed heartbeats plus slack.
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna, and have been since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds + 1,
            heartbeat_stale_trial_callback=_retry_with_same_parameters(),
            engine_kwargs={"pool_pre_ping": True},
        )
    if url.startswith("sqlite"):
        _fast_sqlite(storage.engine)
    return storage


def _retry_with_same_parameters() -> RetryHeartbeatStaleTrialCallback:
    """What happens to a trial whose worker died: a new trial with its parameters, twice at most."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=2)


def _fast_sqlite(engine) -> None:
    """WAL and relaxed fsync: optuna commits every attribute it stores, and on a default
    SQLite file each commit waits for the disk (~10 ms here), longer than a replayed trial runs.
    WAL also lets several local workers read while one writes."""
    from sqlalchemy import event

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before the listener reconnect with it


def make_sampler(settings: SearchSettings, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = settings.seed + 1000 * worker
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "nsga2":
        population = max(4, min(50, settings.trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    startup = max(4, min(10, settings.trials // 4))
    with warnings.catch_warnings():  # multivariate/group TPE: "experimental" since optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=startup, multivariate=True, group=True, seed=seed)


def open_study(settings: SearchSettings, worker: int = 0) -> optuna.Study:
    """Create the study or join it; refuse to join one that searches something else."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(
            min_resource=settings.first_rung, reduction_factor=settings.halving_factor, min_early_stopping_rate=0
        )
        if settings.pruning
        else optuna.pruners.NopPruner()
    )
    for attempt in range(5):
        try:
            study = optuna.create_study(
                study_name=settings.study_name,
                storage=open_storage(settings.storage, settings.heartbeat_seconds),
                directions=settings.objective.directions,
                sampler=make_sampler(settings, worker),
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except (SQLAlchemyError, optuna.exceptions.DuplicatedStudyError):
            # Workers starting together race to create the tables and the study; the loser retries.
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    identity = json.dumps(settings.identity(), sort_keys=True)
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", identity)
    elif stored != identity:
        raise SearchError(
            f"study {settings.study_name!r} in {settings.storage} was made by a different search "
            "(space, task, objective or dev settings differ); pick another --study-name or --out"
        )
    return study


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_worker(
    settings: SearchSettings,
    worker: int = 0,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run trials until the study holds `settings.trials` finished ones (shared by all workers)."""
    study = open_study(settings, worker)
    fail_orphaned_trials(study)
    task = load_task(settings.task)
    problems = task.problems("dev", settings.dev_limit)
    if not problems:
        raise SearchError(f"task {settings.task!r} has no dev problems")
    rungs = rung_sizes(len(problems), settings.first_rung if settings.pruning else None, settings.halving_factor)
    cache = GenerationCache(settings.cache or default_cache_path()) if settings.replay else None

    def objective(trial: optuna.Trial) -> list[float] | float:
        trial.set_user_attr(_OWNER, _this_process(trial.number))  # first: a kill from here on is recognised
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        recipe = settings.space.suggest(trial)
        trial.set_user_attr("recipe", recipe.to_yaml())
        # the structure is how every trial table, trials.csv and the winner name a trial: it carries the mark
        trial.set_user_attr("structure", marked(settings.space.describe(trial.params), recipe.uses_oracle))
        if recipe.uses_oracle:  # only with allow_oracle
            trial.set_user_attr("oracle", " ".join(str(use) for use in recipe.oracle_uses))
        twin = _finished_twin(study, trial)
        if twin is not None:  # TPE re-suggests known points in small spaces: reuse, do not rerun
            for key in ("accuracy", "cost", "problems", "violation", "feasible"):
                trial.set_user_attr(key, twin.user_attrs.get(key))
            if settings.objective.budget is not None:
                trial.set_constraint("budget", twin.user_attrs.get("violation", 0.0))
            trial.set_user_attr("duplicate_of", twin.number)
            trial.set_user_attr("samples_generated", 0)
            trial.set_user_attr("samples_replayed", 0)
            trial.set_user_attr("wall_seconds", 0.0)
            if twin.state == TrialState.PRUNED:
                raise optuna.TrialPruned(f"same parameters as pruned trial {twin.number}")
            return twin.values if settings.objective.pareto else twin.values[0]
        try:
            measured = asyncio.run(
                evaluate(recipe, task, problems, settings.objective, rungs=rungs, cache=cache,
                         trial=trial, concurrency=settings.concurrency)
            )
        except Pruned as stop:
            _record(trial, settings.objective, stop.evaluation)
            raise optuna.TrialPruned(str(stop)) from None
        _record(trial, settings.objective, measured)
        return settings.objective.values(measured.accuracy, measured.cost) if settings.objective.pareto else measured.accuracy

    callbacks = [MaxTrialsCallback(settings.trials, states=FINISHED)]
    if on_trial is not None:
        callbacks.append(on_trial)
    try:
        if finished_trials(study) < settings.trials:
            study.optimize(objective, n_trials=settings.trials, callbacks=callbacks, catch=(), gc_after_trial=False)
    finally:
        if cache is not None:
            cache.close()
    return study


#: The user attribute naming the process that runs a trial: {"trial", "host", "pid", "started"}.
_OWNER = "worker_process"


def _this_process(trial_number: int) -> dict:
    """This process as a trial's owner. The start time tells it from a later process that got
    the same pid; the trial number, from a retry that copied a dead trial's attributes."""
    return {"trial": trial_number, "host": socket.gethostname(), "pid": os.getpid(),
            "started": psutil.Process().create_time()}


def _died(owner: object, trial_number: int) -> bool:
    """Whether `owner` recorded a process of this machine that no longer runs. Unknown owners
    and other machines' processes are not judged here: their heartbeats are."""
    if not isinstance(owner, dict) or owner.get("trial") != trial_number or owner.get("host") != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(owner["pid"]).create_time() - owner["started"]) > 0.01
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's process with that pid: running
        return False


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail each RUNNING trial whose worker on this machine is gone, and queue its retry (as a
    stale heartbeat would, but without waiting for one: no timing involved). Returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _died(trial.user_attrs.get(_OWNER), trial.number):
            continue
        try:
            frozen = study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):  # another worker got there first
            continue
        _retry_with_same_parameters()(study, frozen)
        failed.append(trial.number)
    return failed


def _record(trial: optuna.Trial, objective: Objective, measured: Evaluation) -> None:
    if objective.budget is not None:  # TPE and NSGA-II read it: <= 0 is feasible
        trial.set_constraint("budget", objective.violation(measured.cost))
    trial.set_user_attr("accuracy", measured.accuracy)
    trial.set_user_attr("cost", measured.cost)
    trial.set_user_attr("problems", measured.problems)
    trial.set_user_attr("violation", objective.violation(measured.cost))
    trial.set_user_attr("feasible", objective.feasible(measured.cost))
    trial.set_user_attr("samples_generated", measured.samples_generated)
    trial.set_user_attr("samples_replayed", measured.samples_replayed)
    trial.set_user_attr("wall_seconds", measured.wall_seconds)
    trial.set_user_attr("errors", measured.errors)
    trial.set_user_attr("outcomes", to_json(measured.outcomes))


def _finished_twin(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial | None:
    """An earlier finished trial with exactly these parameters (original measurements only)."""
    params = trial.params
    for other in study.get_trials(deepcopy=False, states=FINISHED):
        if other.number != trial.number and other.params == params and "duplicate_of" not in other.user_attrs:
            if other.state == TrialState.COMPLETE or other.user_attrs.get("problems"):
                return other
    return None
