"""`orchestra reward ...`: train the probe process reward model and look inside probe files."""

from __future__ import annotations

import asyncio
import codecs
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from orchestra.backends import DEFAULT_MODEL
from orchestra.cli.inputs import load_models, open_cache
from orchestra.terminal import console, errors, fail

reward_app = typer.Typer(help="Process reward models: train the hidden-state probe, inspect probe files.", no_args_is_help=True)


def _delimiter(raw: str) -> str:
    """`\\n\\n` on a command line means two newlines: escapes are decoded."""
    decoded = codecs.decode(raw, "unicode_escape")
    if not decoded:
        raise typer.BadParameter("the step delimiter must not be empty")
    return decoded


@reward_app.command()
def train(
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec whose train split is rolled out and scored.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Probe file to write (.safetensors; a .json copy of its metadata goes beside it).")],
    model: Annotated[str, typer.Option(help="Generator whose hidden states the probe reads (local backend).")] = DEFAULT_MODEL,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    problems: Annotated[int, typer.Option("--problems", "-n", min=2, help=(
        "Training-split problems to roll out. Measured on one-digit sums: with 40 the probe did worse than "
        "chance on held-out problems (it memorises 576-dim states), with 120 it beat the log-prob baseline."))] = 120,
    rollouts: Annotated[int, typer.Option(min=1, help="Full solutions sampled per problem.")] = 4,
    continuations: Annotated[int, typer.Option(min=1, help="Completions sampled from each step prefix to label it.")] = 4,
    delimiter: Annotated[str, typer.Option(
        help="Step delimiter (escapes decoded). Default: a blank line, the delimiter step-wise search cuts at, "
        "so the probe sees the same step ends it will score.")] = "\\n\\n",
    max_steps: Annotated[int, typer.Option(min=1, help="Prefixes labelled per rollout (the first ones).")] = 8,
    max_tokens: Annotated[int, typer.Option(min=1, help="Length limit of a whole solution.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of rollouts and continuations.")] = 0.7,
    head: Annotated[str, typer.Option(help="linear or mlp.")] = "linear",
    epochs: Annotated[int, typer.Option(min=1, help="Full-batch training steps.")] = 300,
    heldout: Annotated[float, typer.Option(help="Share of problems held out for the AUC.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seeds sampling, the held-out split and training.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Problems labelled at once (the engine batches their calls).")] = 8,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite). Default: ~/.cache/orchestra/generations.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the generation cache.")] = False,
) -> None:
    """Label rollouts automatically, train a probe on the model's hidden states, save it with its held-out AUC."""
    from orchestra.backends import HIDDEN_STATES, ModelSpec
    from orchestra.context import Ledger, ModelHandle
    from orchestra.reward.probe_head import save_probe
    from orchestra.reward.training import LabellingSettings, fit_probe, label_problems, probe_metadata
    from orchestra.tasks import load_task

    if head not in ("linear", "mlp"):
        raise fail(f"unknown head {head!r}; expected linear or mlp")
    if not 0 < heldout < 1:
        raise fail(f"--heldout must be between 0 and 1, got {heldout}")
    settings = LabellingSettings(
        rollouts=rollouts, continuations=continuations, delimiter=_delimiter(delimiter), temperature=temperature,
        max_tokens=max_tokens, max_steps=max_steps, seed=seed,
    )
    try:
        task_obj = load_task(task)
        chosen = task_obj.problems("train", problems)
    except ValueError as err:
        raise fail(str(err)) from None
    if len(chosen) < 2:
        raise fail(f"task {task!r} has {len(chosen)} training problems; need at least 2 (one to hold out)")
    try:
        spec = ModelSpec(model=model, dtype=dtype)
    except ValueError as err:
        raise fail(str(err)) from None
    [backend] = load_models([spec], what=model)
    if HIDDEN_STATES not in backend.capabilities:
        raise fail(f"backend {spec.backend!r} does not return hidden states; the probe needs them")
    store = open_cache(cache, disabled=no_cache)
    handle = ModelHandle(
        alias="generator", backend=backend,
        ledger=Ledger(meters=[]), node="reward-train", cache=store,
    )

    started = time.monotonic()
    with Progress(
        TextColumn("[bold]labelling"), BarColumn(), MofNCompleteColumn(),
        TextColumn("steps {task.fields[steps]} · label {task.fields[label]} · {task.fields[tokens]} tokens"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    ) as progress:
        bar = progress.add_task("labelling", total=len(chosen), steps=0, label="-", tokens=0)
        seen: list[float] = []

        def tick(_problem, steps) -> None:
            seen.extend(s.label for s in steps)
            progress.update(
                bar, advance=1, steps=len(seen), label=f"{sum(seen) / max(1, len(seen)):.2f}",
                tokens=handle.ledger.total.total_tokens,
            )

        try:
            steps = asyncio.run(label_problems(handle, task_obj, chosen, settings, concurrency=concurrency, on_problem=tick))
        except KeyboardInterrupt:
            errors.print("interrupted: the samples drawn so far are in the generation cache; rerun to resume")
            raise typer.Exit(code=130) from None
    labelling_seconds = time.monotonic() - started
    if not steps:
        raise fail("no steps were labelled")
    with console.status("training the probe..."):
        fit = fit_probe(steps, kind=head, epochs=epochs, heldout_share=heldout, seed=seed)  # type: ignore[arg-type]
    usage = handle.ledger.total
    metadata = probe_metadata(
        fit, steps, settings, model=backend.info.name, task=task, epochs=epochs, tokens=usage.total_tokens
    )
    save_probe(out, fit.head, metadata)

    table = Table(title=f"probe PRM · {task}", show_header=False)
    table.add_row("problems (train / held-out)", f"{metadata.problems_train} / {metadata.problems_heldout}")
    table.add_row("steps (train / held-out)", f"{metadata.steps_train} / {metadata.steps_heldout}")
    table.add_row("label balance", f"mean label {metadata.mean_label:.3f} · "
                  f"{metadata.positive_share:.1%} of steps have a correct continuation")
    table.add_row("held-out AUC, probe", _auc_text(metadata.heldout_auc))
    table.add_row("held-out AUC, mean log-prob baseline", _auc_text(metadata.heldout_logprob_auc))
    table.add_row("tokens (prompt + completion)", f"{usage.prompt_tokens:,} + {usage.completion_tokens:,}"
                  f" ({usage.cache_hits:,} samples replayed from the cache)")
    table.add_row("labelling time", f"{labelling_seconds:.0f} s")
    table.add_row("written", f"{out} ({out.stat().st_size:,} bytes)")
    console.print(table)


def _auc_text(auc: float | None) -> str:
    return "n/a (held-out steps are all one class)" if auc is None else f"{auc:.3f}"


@reward_app.command()
def show(path: Annotated[Path, typer.Argument(help="A probe file written by `orchestra reward train`.")]) -> None:
    """Print what a probe file records: model, delimiter, training settings, held-out AUC."""
    from orchestra.reward.probe_head import read_metadata

    try:
        metadata = read_metadata(path)
    except (FileNotFoundError, ValueError) as err:
        raise fail(str(err)) from None
    table = Table(title=str(path), show_header=False)
    for name, value in metadata.model_dump().items():
        table.add_row(name, repr(value) if isinstance(value, str) else str(value))
    console.print(table)
