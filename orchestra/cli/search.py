"""`orchestra search SPACE --task T --budget B --trials N`: architecture search under a compute budget."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestra.cli.inputs import check_out_folder, load_models, open_cache
from orchestra.oracle import ORACLE_NOTE
from orchestra.tasks import DEFAULT_TASK
from orchestra.terminal import console, errors, fail


def _worker_process(settings_json: str, worker: int) -> None:
    """Entry point of a `--workers` process (spawned: a fresh interpreter, its own model copy)."""
    from orchestra.search.study import SearchSettings, run_worker

    run_worker(SearchSettings.model_validate_json(settings_json), worker)


def search(
    space: Annotated[Path, typer.Argument(help="Search space YAML (see recipes/spaces/).")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec; the search runs on its dev split, the final check on test.")] = DEFAULT_TASK,
    budget: Annotated[Optional[float], typer.Option(help="Most mean cost per problem (in --cost units) the winner may spend.")] = None,
    cost: Annotated[str, typer.Option(help="Cost measure: completion_tokens, total_tokens, prompt_tokens, flops, calls or seconds (wall time; turns replay off).")] = "completion_tokens",
    pareto: Annotated[bool, typer.Option("--pareto", help="Optimize accuracy and cost together (Pareto front) instead of accuracy alone.")] = False,
    trials: Annotated[int, typer.Option(help="Finished trials the study should hold (shared by all workers).")] = 20,
    dev_limit: Annotated[int, typer.Option(help="Dev problems a trial that is never pruned runs (replay makes later trials nearly free).")] = 200,
    first_rung: Annotated[int, typer.Option(help="Dev problems of the first successive-halving rung (0: no pruning).")] = 25,
    halving_factor: Annotated[int, typer.Option(help="Successive halving: rungs grow, and survivors shrink, by this factor.")] = 2,
    sampler: Annotated[str, typer.Option(help="tpe (Bayesian, constraint-aware), random, or nsga2 (with --pareto).")] = "tpe",
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    storage: Annotated[Optional[str], typer.Option(help="optuna storage: a SQLite path, sqlite:///..., or postgresql://user@host:port/db. Default: OUT/study.db.")] = None,
    study_name: Annotated[Optional[str], typer.Option(help="Study to create or join (default: the space's name).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (others may join from elsewhere with the same --storage).")] = 1,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default runs/search-SPACE). Reuse one to resume.")] = None,
    race_limit: Annotated[int, typer.Option(help="Dev problems racing may extend statistically tied configurations to, capped by the dev split (at most --dev-limit: no racing).")] = 1000,
    race_chunk: Annotated[int, typer.Option(min=1, help="Dev problems each racing round adds.")] = 100,
    test_limit: Annotated[int, typer.Option(help="Test problems for the final check of the winner beside greedy (0: skip).")] = 200,
    compare: Annotated[Optional[list[Path]], typer.Option(help="Hand-written recipe to run beside the winner and greedy on the test split (repeatable; one named greedy replaces the built-in greedy).")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite) trials replay from. Default: ~/.cache/orchestra/generations.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="No replay: every trial generates its samples afresh.")] = False,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once.")] = 32,
    allow_oracle: Annotated[bool, typer.Option("--allow-oracle", help="Search a space that offers an oracle scorer (task, execution), which reads the reference answer: for measurement only.")] = False,
) -> None:
    """Search a space of recipes for the most accurate one under a compute budget (optuna)."""
    from orchestra.paths import default_cache_path
    from orchestra.recipe import load_recipe
    from orchestra.tasks import load_task
    from orchestra.search.holdout import GREEDY, greedy_like, holdout
    from orchestra.search.objectives import COST_NAMES, Objective
    from orchestra.search.outputs import (
        best_recipe, best_trial, plot_pareto, replay_summary, trials_to_best, write_best,
        write_summary, write_trials_csv,
    )
    from orchestra.search.winner import choose_winner
    from orchestra.search.space import SpaceError, load_space
    from orchestra.search.study import SearchError, SearchSettings, finished_trials, open_study, run_worker, storage_url

    if cost not in COST_NAMES:
        raise fail(f"--cost must be one of {', '.join(COST_NAMES)}")
    if sampler not in ("tpe", "random", "nsga2"):
        raise fail("--sampler must be tpe, random or nsga2")
    if sampler == "nsga2" and not pareto:
        raise fail("--sampler nsga2 is multi-objective: add --pareto")
    try:
        space_obj = load_space(space, allow_oracle=allow_oracle)
        compared = [load_recipe(path) for path in compare or []]
        task_obj = load_task(task)
    except (SpaceError, FileNotFoundError, ValueError) as err:
        raise fail(str(err)) from None
    objective = Objective(cost=cost, budget=budget, pareto=pareto)  # type: ignore[arg-type]
    folder = check_out_folder(out or Path("runs") / f"search-{space_obj.name}")
    folder.mkdir(parents=True, exist_ok=True)
    replay = objective.replays and not no_cache
    if replay:  # a damaged or unusable cache ends the command now, in one line, not in every worker
        open_cache(cache).close()
    if not objective.replays and not no_cache:
        console.print("cost is wall time: replay is off (a replayed trial would look free)")
    settings = SearchSettings(
        space=space_obj, task=task, objective=objective, trials=trials, dev_limit=dev_limit,
        first_rung=first_rung or None, halving_factor=halving_factor, sampler=sampler, seed=seed,  # type: ignore[arg-type]
        storage=storage_url(storage, folder), study_name=study_name or space_obj.name,
        cache=str(cache or default_cache_path()), replay=replay, concurrency=concurrency,
        race_limit=race_limit, race_chunk=race_chunk, allow_oracle=allow_oracle,
    )
    try:
        study = open_study(settings)
    except SearchError as err:
        raise fail(str(err)) from None
    already = finished_trials(study)
    console.print(
        f"searching {len(space_obj.structures())} layer structures of {space_obj.name} for {objective.describe()} "
        f"on {task} (dev, up to {dev_limit} problems); {settings.sampler} sampler; study {settings.study_name} in {settings.storage}"
        + (f"; resuming: {already} trials already finished" if already else "")
    )
    if workers == 1:  # spawned workers load their own copy
        load_models(space_obj.models.values())
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
        TextColumn("best dev acc {task.fields[best]}"), TimeElapsedColumn(), console=console,
    ) as progress:
        bar = progress.add_task("trials", total=trials, completed=min(already, trials), best="-")

        def refresh(current) -> None:
            best = best_trial(current, objective)
            progress.update(bar, completed=min(finished_trials(current), trials),
                            best=f"{best.user_attrs['accuracy']:.0%} (trial {best.number})" if best else "-")

        try:
            if workers == 1:
                study = run_worker(settings, 0, on_trial=lambda s, _t: refresh(s))
            else:
                context = multiprocessing.get_context("spawn")
                processes = [context.Process(target=_worker_process, args=(settings.model_dump_json(), i)) for i in range(workers)]
                for p in processes:
                    p.start()
                while any(p.is_alive() for p in processes):
                    time.sleep(2)
                    refresh(study)
                failed = [p.exitcode for p in processes if p.exitcode]
                if failed:
                    errors.print(f"[yellow]{len(failed)} worker(s) exited with an error (codes {failed}); rerun to finish the study[/]")
            refresh(study)
        except KeyboardInterrupt:
            errors.print(f"interrupted: finished trials are stored; rerun the same command (--out {folder}) to resume")
            raise typer.Exit(code=130) from None
    searched = time.monotonic() - started

    try:
        winner = choose_winner(study, settings, report=lambda line: console.print(f"[dim]{line}[/]"))
    except KeyboardInterrupt:
        errors.print(f"interrupted while racing: finished races are stored; rerun the same command (--out {folder}) to resume")
        raise typer.Exit(code=130) from None
    console.print(_trials_table(study, objective, winner.trial if winner else None))
    console.print(f"search wall time: {searched:.1f} s; {replay_summary(study).describe()}")
    reached = trials_to_best(study)
    if reached is not None:
        console.print(f"trials to reach the best dev accuracy: {reached[0]} ({reached[1]} distinct configurations evaluated)")
    console.print(f"trials: {write_trials_csv(study, folder / 'trials.csv')}")
    console.print(f"plot: {plot_pareto(study, objective, folder / 'pareto.png', winner.trial if winner else None)}")
    if settings.storage.startswith("sqlite:///"):
        console.print(f"study: {settings.storage.removeprefix('sqlite:///')} (optuna-dashboard {settings.storage})")
    summary = {"space": space_obj.name, "task": task, "objective": objective.model_dump(mode="json"),
               "dev_limit": dev_limit, "trials": finished_trials(study), "winner": None, "test": None}
    if winner is None:
        write_summary(folder / "summary.json", **summary)
        raise fail("no finished trial fits the budget; raise --budget or widen the space")
    summary["winner"] = winner.to_json()
    if len(winner.tied) > 1:
        console.print(_tied_table(winner, objective))
    best = next(t for t in study.get_trials(deepcopy=False) if t.number == winner.trial)
    console.print(f"winner: {winner.describe()}")
    console.print(f"best recipe: {write_best(best, folder / 'best.yaml')} (trial {winner.trial}: dev accuracy "
                  f"{winner.accuracy} on {winner.problems} problems, {winner.cost:.0f} {cost}/problem)")
    if test_limit:
        searched_recipe = best_recipe(best).model_copy(update={"name": f"searched ({space_obj.name})"})
        try:
            greedy = next((r for r in compared if r.name == GREEDY), None) or greedy_like(searched_recipe)
        except ValueError as err:
            raise fail(f"{err}; add --compare with a recipe named {GREEDY!r}") from None
        others = [r for r in compared if r is not greedy]
        store = open_cache(settings.cache) if replay and settings.cache else None
        try:
            result = asyncio.run(holdout([searched_recipe, *others], task_obj, objective, test_limit, greedy=greedy,
                                         cache=store, concurrency=concurrency))
        finally:
            if store is not None:
                store.close()
        if result is None:
            console.print(f"{task} has no test problems: no held-out check")
        else:
            summary["test"] = result.to_json()
            console.print(_holdout_table(result, task, cost))
    console.print(f"summary: {write_summary(folder / 'summary.json', **summary)}")


def _tied_table(winner, objective) -> Table:
    """The configurations the dev data cannot tell apart; the cheapest of them won."""
    table = Table(title=f"statistically tied with the leader on {winner.problems} dev problems", header_style="bold")
    for column in ("trial", "structure", "accuracy (dev, 95% CI)", objective.cost, "leader ahead by (paired)"):
        table.add_column(column)
    for s in winner.standings:
        if s.tied:
            mark = " *" if s.trial == winner.trial else ""
            versus = "leader" if s.leader_ahead is None else s.leader_ahead.points()
            table.add_row(f"{s.trial}{mark}", s.structure, str(s.accuracy), f"{s.cost:.0f}", versus)
    return table


def _holdout_table(result, task: str, cost: str) -> Table:
    """Test accuracy with intervals, cost, and each recipe's paired difference to greedy."""
    table = Table(title=f"{task} · test · {result.problems} problems", header_style="bold",
                  caption=f"a 10-point difference from greedy needs about {result.problems_for()} test problems to be seen "
                          "(at the searched recipe's disagreement with greedy)"
                          + (f" · {ORACLE_NOTE}" if any(row.oracle for row in result.rows) else ""))
    for column in ("recipe", "accuracy (95% CI)", f"{cost}/problem", "within budget", "vs greedy (paired)"):
        table.add_column(column)
    for row in result.rows:
        versus = "-" if row.versus_greedy is None else f"{row.versus_greedy.points()} {row.versus_greedy.verdict()}"
        table.add_row(row.label, str(row.accuracy), f"{row.cost:.0f}", "yes" if row.within_budget else "[red]no[/]", versus)
    return table


def _trials_table(study, objective, winner: int | None) -> Table:
    """The Pareto front of the complete trials, cheapest first; the winner starred."""
    from orchestra.search.outputs import measured_trials, pareto_front

    trials = measured_trials(study)
    front = {t.number for t in pareto_front(trials)}
    table = Table(title="Pareto front of complete trials (dev)", header_style="bold",
                  caption=ORACLE_NOTE if any("oracle" in t.user_attrs for t in trials) else None)
    for column in ("trial", "structure", "accuracy", objective.cost, "replayed"):
        table.add_column(column)
    for t in sorted((t for t in trials if t.number in front), key=lambda t: t.user_attrs["cost"]):
        mark = " *" if t.number == winner else ""
        generated = t.user_attrs.get("samples_generated")
        table.add_row(f"{t.number}{mark}", t.user_attrs.get("structure", ""), f"{t.user_attrs['accuracy']:.1%}",
                      f"{t.user_attrs['cost']:.0f}", "-" if generated is None else ("all" if generated == 0 else "part"))
    return table
