"""`orchestra scale RECIPE --n 1,2,4,8`: accuracy, pass@n and majority@n against compute.

Failed problems are reported as `orchestra run` reports them: a warning when
some failed, exit code 1 (and no table file or plot) when every problem of
some n failed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress

from orchestra.cli.inputs import (
    accuracy_progress,
    check_out_folder,
    check_run_folder,
    load_models,
    load_problems,
    load_recipe_or_fail,
    open_cache,
)
from orchestra.tasks import DEFAULT_TASK
from orchestra.terminal import console, errors, fail


def scale(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file with a `sample` node.")],
    n: Annotated[str, typer.Option("--n", help="Sample counts, comma-separated, e.g. 1,2,4,8,16. The largest is generated; the others replay it.")] = "1,2,4,8",
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec, e.g. reasoning_gym:chain_sum?max_terms=2, humaneval, jsonl:FILE.")] = DEFAULT_TASK,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Number of problems.")] = 20,
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default runs/scale-RECIPE-TIME): a run folder per n, scale.csv, scale.png. Reuse one to resume.")] = None,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once (the backend batches their requests).")] = 32,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite) the smaller n replay from. Default: ~/.cache/orchestra/generations.sqlite.")] = None,
    subsets: Annotated[int, typer.Option(min=1, help="Random n-subsets of the pool that majority@n averages over.")] = 1000,
) -> None:
    """Accuracy, pass@n and majority@n against compute for several sample counts, from one pool of samples."""
    from orchestra.run_folder import RunFolderError
    from orchestra.scaling.report import plot_curves, scale_table, write_csv
    from orchestra.scaling.sweep import ScaleError, ScaleObserver, ascale, parse_sample_counts, sample_nodes

    r = load_recipe_or_fail(recipe)
    try:
        counts = parse_sample_counts(n)
        sample_nodes(r)
    except ScaleError as err:
        raise fail(str(err)) from None
    task_obj, problems = load_problems(task, split, limit)
    base = check_out_folder(out or Path("runs") / f"scale-{r.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    for count in counts:  # whether each n's folder can hold a run (its recipe is made later, per n)
        check_run_folder(base / f"n{count}")
    store = open_cache(cache)
    load_models(r.models.values())

    class Bars(ScaleObserver):
        def __init__(self, progress: Progress):
            self.progress, self.bars, self.right = progress, {}, {}

        def stage(self, name: str, total: int) -> None:
            self.bars[name] = self.progress.add_task(name, total=total, accuracy="-")
            self.right[name] = []

        def step(self, name: str, result=None) -> None:
            if result is not None:
                self.right[name].append(result.correct)
            done = self.right[name]
            self.progress.update(self.bars[name], advance=1, accuracy=f"{sum(done) / len(done):.0%}" if done else "-")

    try:
        with accuracy_progress() as progress:
            result = asyncio.run(
                ascale(r, task_obj, counts, out=base, cache=store, problems=problems, split=split,  # type: ignore[arg-type]
                       concurrency=concurrency, subsets=subsets, observer=Bars(progress))
            )
    except (ScaleError, RunFolderError) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        errors.print(f"interrupted: finished problems are saved; rerun with --out {base} to resume")
        raise typer.Exit(code=130) from None
    finally:
        store.close()
    console.print(scale_table(result))
    if _report_failures(result):
        raise typer.Exit(code=1)
    regenerated = result.regenerated()
    smaller = [row for row in result.rows if row.n < result.pool_n]
    if regenerated:
        errors.print(
            "[bold yellow]warning:[/] smaller n generated samples instead of replaying the pool: "
            + ", ".join(f"n={k}: {v}" for k, v in regenerated.items())
            + " (a budget that shrank max_tokens changes the samples; see the run folders)",
            highlight=False,
        )
    elif smaller:
        replayed = sum(row.replayed for row in smaller)
        console.print(f"replay check: n={', '.join(str(row.n) for row in smaller)} generated 0 samples ({replayed} replayed from the n={result.pool_n} pool)")
    console.print(f"table: {write_csv(result, base / 'scale.csv')}")
    console.print(f"plot: {plot_curves(result, base / 'scale.png')}")
    console.print(f"run folders: {base}/n*")


def _report_failures(result) -> bool:
    """A line per n whose problems failed (as `orchestra run` does); whether every problem of some n failed."""
    all_failed = False
    for row in result.rows:
        if not row.errors:
            continue
        where = f"see {Path(row.out) / 'results.jsonl'}"
        if row.errors == row.problems:
            all_failed = True
            errors.print(f"[bold red]error:[/] n={row.n}: all {row.problems} problems failed ({escape(where)})", highlight=False)
        else:
            errors.print(f"[bold yellow]warning:[/] n={row.n}: {row.errors} of {row.problems} problems failed, counted as wrong "
                         f"({escape(where)}; rerun with the same --out to retry them)", highlight=False)
    return all_failed
