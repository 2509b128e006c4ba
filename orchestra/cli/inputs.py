"""What every command that runs recipes needs first, each failing with one line, not a traceback.

The recipe (file, field and line of every problem), the task's problems, the
output folders and generation cache (checked before anything slow starts), and
the models loaded once under a spinner before the progress bars start (the local
backend's weights wait for the first sample the generation cache cannot replay):
`run`, `scale`, `search`, `serve` and `reward train` all begin with these.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.markup import escape
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

    if limit is not None and limit < 1:
        raise fail(f"--limit must be at least 1 (got {limit})")
    try:
        task_obj = load_task(task)
        problems = task_obj.problems(split, limit)  # type: ignore[arg-type]
    except ValueError as err:
        raise fail(str(err)) from None
    if not problems:
        raise fail(f"task {task!r} has no problems in split {split!r}")
    return task_obj, problems


def check_out_folder(path: Path) -> Path:
    """`path` if it is, or can be made, a folder to write in (nothing is created yet); else the command ends."""
    from orchestra.run_folder import RunFolderError, check_folder

    try:
        check_folder(path)
    except RunFolderError as err:
        raise fail(f"--out: {err}") from None
    return path


def check_run_folder(path: Path, recipe=None, task: str | None = None, split: str | None = None) -> None:
    """Fail now, not after the models load, when `path` cannot hold a run (or, given the recipe, holds
    another run); mend what a crash left there (a torn last line), saying so."""
    from orchestra.run_folder import RunFolder, RunFolderError

    check_out_folder(path)
    if not path.is_dir():
        return
    try:
        folder = RunFolder(path)
        if recipe is not None:
            folder.check(recipe, task, split)
    except RunFolderError as err:
        raise fail(str(err)) from None
    for note in folder.repaired:
        errors.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def open_cache(path: Path | str | None, *, disabled: bool = False, recover: bool = False):
    """The generation cache at `path` (default: the user's), or None when disabled. A file that cannot
    open, or a damaged one, ends the command in one line naming it; with `recover` a damaged file is
    moved aside and a fresh cache started."""
    import sqlite3

    from orchestra.cache import CacheCorrupted, GenerationCache
    from orchestra.paths import default_cache_path

    if disabled:
        return None
    path = Path(path or default_cache_path())
    if path.is_dir():
        raise fail(f"--cache {path} is a folder; give the cache file, e.g. {path / 'generations.sqlite'}")
    try:
        store = GenerationCache(path, on_corrupt="move-aside" if recover else "fail")
    except CacheCorrupted as err:
        raise fail(str(err)) from None
    except (sqlite3.Error, OSError) as err:
        raise fail(f"cannot open the generation cache {path}: {err}") from None
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
