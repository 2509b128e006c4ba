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

reward_app = typer.Typer(
    help="Reward models: train the outcome verifier or the hidden-state process probe, inspect their files.",
    no_args_is_help=True,
)


def _delimiter(raw: str) -> str:
    """`\\n\\n` on a command line means two newlines: escapes are decoded."""
    decoded = codecs.decode(raw, "unicode_escape")
    if not decoded:
        raise typer.BadParameter("the step delimiter must not be empty")
    return decoded


@reward_app.command()
def train(
    task: Annotated[str, typer.Option("--task", "-t", help="Task spec whose train split is rolled out and scored.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.safetensors; a .json copy of its metadata goes beside it).")],
    outcome: Annotated[bool, typer.Option("--outcome", help=(
        "Train an outcome verifier (ORM) of final answers, usable as the `orm` scorer, instead of the "
        "process probe of partial answers."))] = False,
    model: Annotated[str, typer.Option(help="Generator whose hidden states the probe reads (local backend).")] = DEFAULT_MODEL,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    problems: Annotated[Optional[int], typer.Option("--problems", "-n", min=2, help=(
        "Training-split problems. Default: 120 for the probe (measured on one-digit sums: with 40 it did worse "
        "than chance on held-out problems, it memorises 576-dim states), 400 for the verifier."))] = None,
    samples: Annotated[int, typer.Option(min=2, help="--outcome: answers sampled per problem (the pool the verifier reads).")] = 16,
    splits: Annotated[int, typer.Option(min=1, help="--outcome: problem splits the held-out AUC is averaged over.")] = 5,
    rollouts: Annotated[int, typer.Option(min=1, help="Full solutions sampled per problem.")] = 4,
    continuations: Annotated[int, typer.Option(min=1, help="Completions sampled from each step prefix to label it.")] = 4,
    delimiter: Annotated[str, typer.Option(
        help="Step delimiter (escapes decoded). Default: a blank line, the delimiter step-wise search cuts at, "
        "so the probe sees the same step ends it will score.")] = "\\n\\n",
    max_steps: Annotated[int, typer.Option(min=1, help="Prefixes labelled per rollout (the first ones).")] = 8,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Length limit of a whole solution (default 256; 128 with --outcome).")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of rollouts and continuations.")] = 0.7,
    head: Annotated[Optional[str], typer.Option(help="linear or mlp (default linear; mlp with --outcome).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Full-batch training steps (default 300; 400 with --outcome).")] = None,
    heldout: Annotated[Optional[float], typer.Option(help="Share of problems held out for the AUC (default 0.25; 0.2 with --outcome).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds sampling, the held-out split and training.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Problems labelled at once (the engine batches their calls).")] = 8,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite). Default: ~/.cache/orchestra/generations.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the generation cache.")] = False,
) -> None:
    """Train a reward model on the train split, labelled automatically, and save it with its held-out AUC.

    Default: the process probe (rollouts cut into steps, each step labelled by its
    sampled continuations, a head on the hidden states). --outcome: the outcome
    verifier (pools of final answers labelled exactly, a head on pool features).
    """
    from orchestra.backends import HIDDEN_STATES, LOGPROBS, ModelSpec
    from orchestra.context import Ledger, ModelHandle
    from orchestra.tasks import load_task

    head = head or ("mlp" if outcome else "linear")
    heldout = heldout if heldout is not None else (0.2 if outcome else 0.25)
    if head not in ("linear", "mlp"):
        raise fail(f"unknown head {head!r}; expected linear or mlp")
    if not 0 < heldout < 1:
        raise fail(f"--heldout must be between 0 and 1, got {heldout}")
    try:
        task_obj = load_task(task)
        chosen = task_obj.problems("train", problems or (400 if outcome else 120))
    except ValueError as err:
        raise fail(str(err)) from None
    if len(chosen) < 2:
        raise fail(f"task {task!r} has {len(chosen)} training problems; need at least 2 (one to hold out)")
    try:
        spec = ModelSpec(model=model, dtype=dtype)
    except ValueError as err:
        raise fail(str(err)) from None
    [backend] = load_models([spec], what=model)
    needed = LOGPROBS if outcome else HIDDEN_STATES
    if needed not in backend.capabilities:
        raise fail(f"backend {spec.backend!r} does not return {needed.replace('_', ' ')}; the {'verifier' if outcome else 'probe'} needs them")
    store = open_cache(cache, disabled=no_cache)
    handle = ModelHandle(alias="generator", backend=backend, ledger=Ledger(meters=[]), node="reward-train", cache=store)
    if outcome:
        from orchestra.reward.outcome_training import PoolSettings

        pools = PoolSettings(samples=samples, temperature=temperature, max_tokens=max_tokens or 128, seed=seed)
        _train_outcome(handle, task, task_obj, chosen, pools, out, head=head, epochs=epochs or 400, splits=splits,
                       heldout=heldout, concurrency=concurrency)
    else:
        from orchestra.reward.training import LabellingSettings

        settings = LabellingSettings(
            rollouts=rollouts, continuations=continuations, delimiter=_delimiter(delimiter), temperature=temperature,
            max_tokens=max_tokens or 256, max_steps=max_steps, seed=seed,
        )
        _train_probe(handle, task, task_obj, chosen, settings, out, head=head, epochs=epochs or 300, heldout=heldout,
                     concurrency=concurrency)


def _progress(what: str, fields: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn(fields),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )


def _train_probe(handle, task, task_obj, chosen, settings, out: Path, *, head: str, epochs: int, heldout: float,
                 concurrency: int) -> None:
    from orchestra.reward.probe_head import save_probe
    from orchestra.reward.training import fit_probe, label_problems, probe_metadata

    started = time.monotonic()
    with _progress("labelling", "steps {task.fields[steps]} · label {task.fields[label]} · {task.fields[tokens]} tokens") as progress:
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
        fit = fit_probe(steps, kind=head, epochs=epochs, heldout_share=heldout, seed=settings.seed)  # type: ignore[arg-type]
    usage = handle.ledger.total
    metadata = probe_metadata(
        fit, steps, settings, model=handle.backend.info.name, task=task, epochs=epochs, tokens=usage.total_tokens
    )
    save_probe(out, fit.head, metadata)

    table = Table(title=f"probe PRM · {task}", show_header=False)
    table.add_row("problems (train / held-out)", f"{metadata.problems_train} / {metadata.problems_heldout}")
    table.add_row("steps (train / held-out)", f"{metadata.steps_train} / {metadata.steps_heldout}")
    table.add_row("label balance", f"mean label {metadata.mean_label:.3f} · "
                  f"{metadata.positive_share:.1%} of steps have a correct continuation")
    table.add_row("held-out AUC, probe", _auc_text(metadata.heldout_auc))
    table.add_row("held-out AUC, mean log-prob baseline", _auc_text(metadata.heldout_logprob_auc))
    _usage_rows(table, handle, labelling_seconds, out)
    console.print(table)


def _train_outcome(handle, task, task_obj, chosen, settings, out: Path, *, head: str, epochs: int, splits: int,
                   heldout: float, concurrency: int) -> None:
    from orchestra.reward.outcome_training import fit_outcome_reward, label_pools

    started = time.monotonic()
    with _progress("sampling", "answers {task.fields[answers]} · right {task.fields[right]} · {task.fields[tokens]} tokens") as progress:
        bar = progress.add_task("sampling", total=len(chosen), answers=0, right="-", tokens=0)
        labels: list[float] = []

        def tick(pool) -> None:
            labels.extend(pool.labels)
            progress.update(bar, advance=1, answers=len(labels), right=f"{sum(labels) / len(labels):.1%}",
                            tokens=handle.ledger.total.total_tokens)

        try:
            pools = asyncio.run(label_pools(handle, task_obj, chosen, settings, concurrency=concurrency, on_pool=tick))
        except KeyboardInterrupt:
            errors.print("interrupted: the samples drawn so far are in the generation cache; rerun to resume")
            raise typer.Exit(code=130) from None
    sampling_seconds = time.monotonic() - started
    if not 0 < sum(labels) < len(labels):
        raise fail(f"all {len(labels)} sampled answers are {'right' if sum(labels) else 'wrong'}: nothing to learn from; "
                   "try another temperature or task")
    with console.status(f"training the verifier ({splits} held-out splits, then all problems)..."):
        verifier = fit_outcome_reward(
            pools, settings, model=handle.backend.info.name, task=task, kind=head, epochs=epochs,  # type: ignore[arg-type]
            splits=splits, heldout_share=heldout, tokens=handle.ledger.total.total_tokens,
        )
    verifier.save(out)
    meta = verifier.metadata
    table = Table(title=f"outcome verifier · {task}", show_header=False)
    table.add_row("problems · answers", f"{meta.problems} · {meta.answers} ({meta.samples_per_problem} per problem, "
                  f"T={meta.temperature})")
    table.add_row("exactly right", f"{meta.positive_share:.1%} of answers")
    for name, auc in (("verifier", meta.auc), ("vote share baseline", meta.auc_vote_share),
                      ("mean log-prob baseline", meta.auc_mean_logprob)):
        table.add_row(f"held-out AUC, {name}", f"{_auc_text(auc.mean)} (splits: "
                      f"{', '.join(_auc_text(a) for a in auc.splits)})")
    _usage_rows(table, handle, sampling_seconds, out)
    console.print(table)


def _usage_rows(table: Table, handle, seconds: float, out: Path) -> None:
    usage = handle.ledger.total
    table.add_row("tokens (prompt + completion)", f"{usage.prompt_tokens:,} + {usage.completion_tokens:,}"
                  f" ({usage.cache_hits:,} samples replayed from the cache)")
    table.add_row("labelling time", f"{seconds:.0f} s")
    table.add_row("written", f"{out} ({out.stat().st_size:,} bytes)")


def _auc_text(auc: float | None) -> str:
    return "n/a (held-out set is all one class)" if auc is None else f"{auc:.3f}"


@reward_app.command()
def show(path: Annotated[Path, typer.Argument(help="A probe or verifier file written by `orchestra reward train`.")]) -> None:
    """Print what a probe or verifier file records: model, training settings, held-out AUCs."""
    from orchestra.reward import outcome_reward, probe_head

    metadata = None
    for read in (probe_head.read_metadata, outcome_reward.read_metadata):
        try:
            metadata = read(path)
            break
        except FileNotFoundError as err:
            raise fail(str(err)) from None
        except ValueError as err:
            problem = str(err)
    if metadata is None:
        raise fail(problem.replace("orchestra outcome verifier", "orchestra probe or verifier"))
    table = Table(title=str(path), show_header=False)
    for name, value in metadata.model_dump().items():
        table.add_row(name, repr(value) if isinstance(value, str) else str(value))
    console.print(table)
