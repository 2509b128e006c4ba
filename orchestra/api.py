"""The Python entry point: `orchestra.run(recipe, task=...)`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from orchestra.cache import GenerationCache
from orchestra.executor import Executor
from orchestra.paths import default_cache_path
from orchestra.problem import Problem
from orchestra.recipe import Recipe, load_recipe
from orchestra.results import ProblemResult, RunResult
from orchestra.run_folder import RunFolder
from orchestra.tasks import Split, Task, load_task

CacheOption = GenerationCache | str | Path | bool


def _cache(option: CacheOption) -> GenerationCache | None:
    if option is False:
        return None
    if option is True:
        return GenerationCache(default_cache_path())
    if isinstance(option, GenerationCache):
        return option
    return GenerationCache(option)


async def arun(
    recipe: Recipe | str | Path,
    task: Task | str | None = None,
    *,
    problems: list[Problem] | None = None,
    split: Split = "test",
    limit: int | None = None,
    out: str | Path | None = None,
    cache: CacheOption = True,
    concurrency: int = 32,
    on_result: Callable[[ProblemResult], None] | None = None,
) -> RunResult:
    """Async version of `run`, for callers that already have an event loop."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if isinstance(task, str):
        task = load_task(task)
    if problems is None:
        if task is None:
            raise ValueError("give a task (e.g. 'reasoning_gym:basic_arithmetic') or a list of problems")
        problems = task.problems(split, limit)
    elif limit is not None:
        problems = problems[:limit]
    folder = None
    if out is not None:
        folder = RunFolder(out)
        folder.start(recipe, task.spec if task else None, split if task else None)
    store = _cache(cache)
    try:
        engine = Executor(recipe, task=task, cache=store, folder=folder, concurrency=concurrency)
        return await engine.run(problems, split=split if task else None, on_result=on_result)
    finally:
        if store is not None and store is not cache:  # opened here, so closed here
            store.close()


def run(
    recipe: Recipe | str | Path,
    task: Task | str | None = None,
    *,
    problems: list[Problem] | None = None,
    split: Split = "test",
    limit: int | None = None,
    out: str | Path | None = None,
    cache: CacheOption = True,
    concurrency: int = 32,
    on_result: Callable[[ProblemResult], None] | None = None,
) -> RunResult:
    """Run a recipe on a task's problems (or on `problems`) and return typed results.

    `recipe` is a `Recipe` or a YAML path; `task` a `Task` or a spec such as
    "reasoning_gym:basic_arithmetic?max_terms=2". With `out`, results and traces
    are written there as they finish and a rerun resumes. `cache` is True (the
    default SQLite cache), False, a path, or a `GenerationCache`.
    """
    return asyncio.run(
        arun(
            recipe,
            task,
            problems=problems,
            split=split,
            limit=limit,
            out=out,
            cache=cache,
            concurrency=concurrency,
            on_result=on_result,
        )
    )
