"""`orchestra run RECIPE [--compare OTHER ...]`: a recipe on a task, accuracy and cost side by side.

Failed problems (a node or the scorer raised) count as wrong, and the command
says how many failed and the first error. When some failed it still exits 0
(the table stands, and rerunning into the same --out folder retries just
those); when every problem of a recipe failed there is no measurement, so it
exits 1. Either way summary.json says `complete: false` until none is left.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

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

FAILED_EXIT_CODE = 1


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec, e.g. reasoning_gym:chain_sum?max_terms=2, humaneval, jsonl:FILE.")] = DEFAULT_TASK,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Number of problems (default: 20).")] = 20,
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/RECIPE-TIME). Reuse one to resume.")] = None,
    compare: Annotated[Optional[list[Path]], typer.Option(help="Another recipe to run on the same problems, side by side (repeatable).")] = None,
    concurrency: Annotated[int, typer.Option(help="Problems in flight at once (the backend batches their requests).")] = 32,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite). Default: ~/.cache/orchestra/generations.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the generation cache.")] = False,
    cache_recover: Annotated[bool, typer.Option("--cache-recover", help="If the generation cache is damaged, rename it to NAME.corrupt-TIME and start a fresh one.")] = False,
) -> None:
    """Run a recipe on a task and print accuracy and cost; --compare puts more recipes side by side."""
    from orchestra.api import arun
    from orchestra.comparison import compare as compare_runs
    from orchestra.report import comparison_lines, node_table, results_table
    from orchestra.run_folder import RunFolderError

    recipes = [load_recipe_or_fail(recipe)] + [load_recipe_or_fail(path) for path in compare or []]
    names = [r.name for r in recipes]
    if len(set(names)) < len(names):
        raise fail(f"compared recipes need distinct names (each gets its own run folder): {', '.join(names)}")
    task_obj, problems = load_problems(task, split, limit)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = check_out_folder(out or Path("runs") / f"{recipes[0].name}-{stamp}")
    for r in recipes:
        check_run_folder(base / r.name if compare else base, r, task_obj.spec, split)
    store = open_cache(cache, disabled=no_cache, recover=cache_recover)
    load_models(spec for r in recipes for spec in r.models.values())

    results = []
    for r in recipes:
        folder = base / r.name if compare else base
        with accuracy_progress() as progress:
            bar = progress.add_task(r.name, total=len(problems), accuracy="-")
            right: list[bool] = []

            def tick(result, bar=bar, right=right) -> None:
                right.append(result.correct)
                progress.update(bar, advance=1, accuracy=f"{sum(right) / len(right):.0%}")

            try:
                result = asyncio.run(
                    arun(r, task_obj, problems=problems, split=split, out=folder, cache=store if store is not None else False,
                         concurrency=concurrency, on_result=tick)  # type: ignore[arg-type]
                )
            except RunFolderError as err:
                raise fail(str(err)) from None
            except KeyboardInterrupt:
                errors.print(f"interrupted: finished problems are saved; rerun with --out {base} to resume")
                raise typer.Exit(code=130) from None
        results.append(result)
    for result in results:
        if result.summary.usage_by_node:
            console.print(node_table(result))
    console.print(results_table(results, title=f"{task} · {split} · {len(problems)} problems"))
    if compare:
        comparison = compare_runs(results)
        for line in comparison_lines(comparison):
            console.print(line, highlight=False)
        (base / "comparison.json").write_text(comparison.model_dump_json(indent=2))
    resumed = results[0].summary.resumed
    if resumed:
        console.print(f"resumed: {resumed} problems were already finished in {base} and were not rerun")
    for result in results:
        estimated = result.summary.usage.estimated_calls
        if estimated:
            console.print(f"{result.summary.recipe}: token counts of {estimated} calls are estimates (the server reported no usage)")
    overhead = results[0].summary.overhead_share
    if overhead is not None:
        console.print(f"time outside model calls: {overhead:.1%} of wall time")
    console.print(f"results: {base}" + (f" (comparison: {base / 'comparison.json'})" if compare else ""))
    all_failed = [_report_failures(result, base) for result in results]  # every recipe's line, then the verdict
    if any(all_failed):
        raise typer.Exit(code=FAILED_EXIT_CODE)


def _report_failures(result, base: Path) -> bool:
    """One line on the problems that failed, if any; whether every problem failed."""
    failed = [x for x in result.results if x.status == "error"]
    if not failed:
        return False
    first = (failed[0].error or "").strip().splitlines() or ["(no message)"]
    reason = f"the first ({failed[0].problem_id}): {first[0][:300]}"
    name, total = result.summary.recipe, len(result.results)
    if len(failed) == total:
        errors.print(f"[bold red]error:[/] {name}: all {total} problems failed; {escape(reason)}", highlight=False)
        return True
    errors.print(
        f"[bold yellow]warning:[/] {name}: {len(failed)} of {total} problems failed (counted as wrong; rerun with "
        f"--out {escape(str(base))} to retry them); {escape(reason)}",
        highlight=False,
    )
    return False
