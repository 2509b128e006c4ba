"""The `orchestra` command line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from orchestra.backend import BackendUnavailable
from orchestra.errors import RecipeError
from orchestra.models import ModelNotFound
from orchestra.tasks import DEFAULT_TASK
from orchestra.terminal import console, errors, fail

app = typer.Typer(
    help="orchestra: spend inference-time compute through recipes, and see what each token buys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _load(path: Path):
    from orchestra.recipe import load_recipe

    try:
        return load_recipe(path)
    except (RecipeError, FileNotFoundError) as err:
        raise fail(str(err)) from None


def _accuracy_progress() -> Progress:
    """The bar `run` and `scale` show: problems done, accuracy so far, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[accuracy]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )

@app.command()
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
) -> None:
    """Run a recipe on a task and print accuracy and cost; --compare puts more recipes side by side."""
    from orchestra.api import arun
    from orchestra.cache import GenerationCache
    from orchestra.engine import get_backend
    from orchestra.paths import default_cache_path
    from orchestra.report import node_table, paired_line, results_table
    from orchestra.run_folder import RunFolderMismatch
    from orchestra.tasks import load_task

    recipes = [_load(recipe)] + [_load(path) for path in compare or []]
    names = [r.name for r in recipes]
    if len(set(names)) < len(names):
        raise fail(f"compared recipes need distinct names (each gets its own run folder): {', '.join(names)}")
    try:
        task_obj = load_task(task)
        problems = task_obj.problems(split, limit)  # type: ignore[arg-type]
    except ValueError as err:
        raise fail(str(err)) from None
    if not problems:
        raise fail(f"task {task!r} has no problems in split {split!r}")
    store = None if no_cache else GenerationCache(cache or default_cache_path())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out or Path("runs") / f"{recipes[0].name}-{stamp}"
    try:
        with console.status("loading models..."):
            for r in recipes:
                for spec in r.models.values():
                    get_backend(spec)
    except (ModelNotFound, BackendUnavailable) as err:
        raise fail(str(err)) from None

    results = []
    for r in recipes:
        folder = base / r.name if compare else base
        with _accuracy_progress() as progress:
            bar = progress.add_task(r.name, total=len(problems), accuracy="-")
            scores: list[float] = []

            def tick(result, bar=bar, scores=scores) -> None:
                scores.append(result.score)
                progress.update(bar, advance=1, accuracy=f"{sum(scores) / len(scores):.0%}")

            try:
                result = asyncio.run(
                    arun(r, task_obj, problems=problems, split=split, out=folder, cache=store if store is not None else False,
                         concurrency=concurrency, on_result=tick)  # type: ignore[arg-type]
                )
            except RunFolderMismatch as err:
                raise fail(str(err)) from None
            except KeyboardInterrupt:
                errors.print(f"interrupted: finished problems are saved; rerun with --out {base} to resume")
                raise typer.Exit(code=130) from None
        results.append(result)
        failed = [x for x in result.results if x.status == "error"]
        for x in failed[:3]:
            errors.print(f"[yellow]{x.problem_id} failed:[/] {x.error}", highlight=False)
    for result in results:
        if result.summary.usage_by_node:
            console.print(node_table(result))
    console.print(results_table(results, title=f"{task} · {split} · {len(problems)} problems"))
    for other in results[1:]:
        console.print(paired_line(results[0], other))
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
    console.print(f"results: {base}")


@app.command()
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
    from orchestra.cache import GenerationCache
    from orchestra.engine import get_backend
    from orchestra.paths import default_cache_path
    from orchestra.run_folder import RunFolderMismatch
    from orchestra.scaling import ScaleError, ScaleObserver, ascale, parse_sample_counts, sample_nodes
    from orchestra.scaling_report import plot_curves, scale_table, write_csv
    from orchestra.tasks import load_task

    r = _load(recipe)
    try:
        counts = parse_sample_counts(n)
        sample_nodes(r)
        task_obj = load_task(task)
        problems = task_obj.problems(split, limit)  # type: ignore[arg-type]
    except ValueError as err:  # ScaleError included
        raise fail(str(err)) from None
    if not problems:
        raise fail(f"task {task!r} has no problems in split {split!r}")
    base = out or Path("runs") / f"scale-{r.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        with console.status("loading models..."):
            for spec in r.models.values():
                get_backend(spec)
    except ModelNotFound as err:
        raise fail(str(err)) from None

    class Bars(ScaleObserver):
        def __init__(self, progress: Progress):
            self.progress, self.bars, self.scores = progress, {}, {}

        def stage(self, name: str, total: int) -> None:
            self.bars[name] = self.progress.add_task(name, total=total, accuracy="-")
            self.scores[name] = []

        def step(self, name: str, result=None) -> None:
            if result is not None:
                self.scores[name].append(result.score)
            done = self.scores[name]
            self.progress.update(self.bars[name], advance=1, accuracy=f"{sum(done) / len(done):.0%}" if done else "-")

    store = GenerationCache(cache or default_cache_path())
    try:
        with _accuracy_progress() as progress:
            result = asyncio.run(
                ascale(r, task_obj, counts, out=base, cache=store, problems=problems, split=split,  # type: ignore[arg-type]
                       concurrency=concurrency, subsets=subsets, observer=Bars(progress))
            )
    except (ScaleError, RunFolderMismatch) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        errors.print(f"interrupted: finished problems are saved; rerun with --out {base} to resume")
        raise typer.Exit(code=130) from None
    finally:
        store.close()
    console.print(scale_table(result))
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


@app.command()
def serve(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files; each is served as a model named after the recipe.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[Optional[str], typer.Option(help="Require clients to send the key held in this environment variable.")] = None,
    max_n: Annotated[int, typer.Option(help="Most choices (recipe runs) per request.")] = 4,
    max_tokens_per_request: Annotated[Optional[int], typer.Option(help="Most completion tokens one choice may make a recipe spend.")] = None,
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1_000_000,
    concurrency: Annotated[int, typer.Option(help="Recipe runs in flight at once; the backend batches their calls.")] = 64,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite) to read and write; default: none. Seeded requests replay from it.")] = None,
) -> None:
    """Serve recipes through an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)."""
    import os

    import uvicorn

    from orchestra.cache import GenerationCache
    from orchestra.server import ServeSettings, create_app

    loaded = [_load(path) for path in recipes]
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise fail(f"--api-key-env {api_key_env}: that environment variable is not set")
    try:
        settings = ServeSettings(
            api_key=api_key, max_n=max_n, max_tokens_per_request=max_tokens_per_request,
            max_request_bytes=max_request_bytes, concurrency=concurrency,
        )
    except ValueError as err:
        raise fail(str(err)) from None
    store = GenerationCache(cache) if cache else None
    try:
        with console.status("loading models..."):
            application = create_app(loaded, settings, store)
    except (ModelNotFound, BackendUnavailable, ValueError) as err:
        raise fail(str(err)) from None
    names = ", ".join(r.name for r in loaded)
    console.print(f"serving {names} at http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(application, host=host, port=port, log_level="warning", lifespan="off")


def _register_search() -> None:
    """`orchestra search` lives in orchestra.search.command; optuna is imported only when it runs."""
    from orchestra.search.command import search

    app.command("search")(search)


_register_search()


@app.command()
def schema() -> None:
    """Print the recipe JSON Schema (point your editor's YAML support at it)."""
    from orchestra.recipe import Recipe

    print(json.dumps(Recipe.model_json_schema(), indent=2))


@app.command()
def graph(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Picture to write (.png, .svg or .pdf). Default: RECIPE.png")] = None,
) -> None:
    """Print a recipe's nodes and edges and draw its DAG."""
    from orchestra.graph import build_graph, draw, execution_layers

    r = _load(recipe)
    g = build_graph(r)
    table = Table(title=f"{r.name}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges", header_style="bold")
    for column in ("layer", "node", "technique", "model", "inputs"):
        table.add_column(column)
    for depth, layer in enumerate(execution_layers(r)):
        for node_id in layer:
            node = r.node(node_id)
            marker = " (output)" if node_id == r.output_node else ""
            table.add_row(str(depth), node_id + marker, node.technique, g.nodes[node_id]["model"] or "-", ", ".join(node.inputs) or "-")
    console.print(table)
    for source, target in g.edges:
        console.print(f"  {source} -> {target}")
    target = out or recipe.with_suffix(".png")
    if target.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise fail("--out must end in .png, .svg or .pdf")
    console.print(f"wrote {draw(r, target)}")


@app.command()
def models() -> None:
    """List known model aliases, whether each is installed, and how to install it."""
    from orchestra.models import model_table

    table = Table(header_style="bold")
    table.add_column("alias", no_wrap=True)
    table.add_column("installed", no_wrap=True)
    table.add_column("file or install command", overflow="fold")
    table.add_column("description")
    for row in model_table():
        mark = "[green]yes[/]" if row["installed"] == "yes" else "[red]no[/]"
        table.add_row(row["alias"], mark, row["where"], row["description"])
    console.print(table)
    console.print("Also accepted as `model:` — a local Hugging Face folder, a .gguf file, or a hub id already in the local HF cache.")


@app.command()
def techniques() -> None:
    """List registered techniques (built-in and from plugins) with their parameters."""
    from orchestra.technique import techniques as registry

    table = Table(header_style="bold")
    for column in ("technique", "what it does", "params", "needs"):
        table.add_column(column)
    for name, tech in sorted(registry().items()):
        params = ", ".join(
            f"{k}={v.get_default(call_default_factory=True)!r}" if not v.is_required() else k
            for k, v in tech.params.model_fields.items()
        )
        table.add_row(name, tech.summary, params or "-", ", ".join(sorted(tech.requires)) or "-")
    console.print(table)


@app.command()
def tasks() -> None:
    """List task kinds and the reasoning-gym datasets."""
    from orchestra.tasks.reasoning_gym_task import dataset_names

    console.print("[bold]task specs[/]: reasoning_gym:NAME?option=value&..., humaneval, jsonl:PATH?prompt=FIELD&answer_field=FIELD")
    console.print("common options: answer=auto|marker|boxed|last_number|regex|code|full, marker=..., pattern=...")
    console.print(f"[bold]reasoning_gym datasets[/] ({len(dataset_names())}): " + ", ".join(dataset_names()))


from orchestra.reward_cli import reward_app  # noqa: E402  (sub-app; its heavy imports are lazy)

app.add_typer(reward_app, name="reward")

if __name__ == "__main__":
    app()
