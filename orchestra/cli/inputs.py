"""What every command that runs recipes needs first, each failing with one line, not a traceback.

The recipe (file, field and line of every problem), the task's problems, the
generation cache, and the models loaded once under a spinner before the
progress bars start: `run`, `scale`, `search`, `serve` and `reward train`
all begin with these.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from orchestra.terminal import console, errors, fail


def load_recipe_or_fail(path: Path):
    from orchestra.errors import RecipeError
    from orchestra.recipe import load_recipe

    try:
        return load_recipe(path)
    except (RecipeError, FileNotFoundError) as err:
        raise fail(str(err)) from None


def load_problems(task: str, split: str, limit: int | None):
    """The task a spec names and the first `limit` problems of its split (none is an error)."""
    from orchestra.tasks import load_task

    try:
        task_obj = load_task(task)
        problems = task_obj.problems(split, limit)  # type: ignore[arg-type]
    except ValueError as err:
        raise fail(str(err)) from None
    if not problems:
        raise fail(f"task {task!r} has no problems in split {split!r}")
    return task_obj, problems


def open_cache(path: Path | str | None, *, disabled: bool = False, recover: bool = False):
    """The generation cache at `path` (default: the user's), or None when disabled. A damaged
    file ends the command, naming it; with `recover` it is moved aside and a fresh one started."""
    from orchestra.cache import CacheCorrupted, GenerationCache
    from orchestra.paths import default_cache_path

    if disabled:
        return None
    try:
        store = GenerationCache(path or default_cache_path(), on_corrupt="move-aside" if recover else "fail")
    except CacheCorrupted as err:
        raise fail(str(err)) from None
    if store.moved_to is not None:
        errors.print(f"the generation cache was damaged: moved it to {store.moved_to} and started a fresh one")
    return store


def load_models(specs: Iterable, what: str = "models"):
    """Load every model once (a spinner meanwhile); a missing model or package ends the command."""
    from orchestra.backends import BackendUnavailable, get_backend
    from orchestra.models import ModelNotFound

    try:
        with console.status(f"loading {what}..."):
            return [get_backend(spec) for spec in specs]
    except (ModelNotFound, BackendUnavailable, ValueError) as err:
        raise fail(str(err)) from None


def accuracy_progress() -> Progress:
    """The bar `run` and `scale` show: problems done, exact accuracy so far, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[accuracy]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
