"""How much of a probe's held-out AUC is the luck of one split: the same labelled steps,
many problem-level held-out splits.

`orchestra reward train` reports the AUC of one split (a quarter of the problems);
with ~30 held-out problems that number moves by several points from split to
split. This replays the labelling of a finished `reward train` run from the
generation cache (so it costs no generation: run it with the same task, counts,
seed and `--cache`), then for each split seed trains the linear and the MLP head
and prints their held-out AUCs next to the mean log-prob baseline's on the same
steps, with means and the share of splits each head beats the baseline; writes
them to bench/results/probe_auc_splits-STAMP.md and .json (date, machine, load,
command; `--out` names another folder).

    .venv/bin/python bench/probe_auc_splits.py --task SPEC -n 120 --cache CACHE.sqlite --splits 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from orchestra.cache import GenerationCache
from orchestra.context import Ledger, ModelHandle
from orchestra.backends import get_backend
from orchestra.backends import ModelSpec
from orchestra.reward.training import LabellingSettings, fit_probe, label_problems
from orchestra.tasks import load_task
from results_file import RESULTS, ResultsFile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("-n", "--problems", type=int, default=40)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--continuations", type=int, default=4)
    parser.add_argument("--delimiter", default="\n\n")
    parser.add_argument("--seed", type=int, default=0, help="the labelling seed of the run to replay")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results files.")
    args = parser.parse_args()

    record = ResultsFile("probe_auc_splits", args.out)
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    task = load_task(args.task)
    backend = get_backend(ModelSpec())
    handle = ModelHandle("generator", backend, Ledger(meters=[]), "bench", GenerationCache(args.cache))
    settings = LabellingSettings(
        rollouts=args.rollouts, continuations=args.continuations, delimiter=args.delimiter, seed=args.seed
    )
    steps = asyncio.run(label_problems(handle, task, task.problems("train", args.problems), settings, concurrency=16))
    replayed = handle.ledger.total.cache_hits
    report(f"{len(steps)} steps of {args.problems} problems ({replayed} samples replayed from the cache)")
    rows = []
    report("split  linear  mlp    mean-logprob  held-out steps")
    for split in range(args.splits):
        linear = fit_probe(steps, kind="linear", epochs=args.epochs, seed=split)
        mlp = fit_probe(steps, kind="mlp", epochs=args.epochs, seed=split)
        rows.append((linear.heldout_auc, mlp.heldout_auc, linear.heldout_logprob_auc))
        report(f"{split:5d}  {linear.heldout_auc:.3f}   {mlp.heldout_auc:.3f}  {linear.heldout_logprob_auc:.3f}"
               f"         {linear.heldout_steps}")
    for name, column in (("linear", 0), ("mlp", 1), ("mean-logprob", 2)):
        values = [row[column] for row in rows]
        report(f"{name:13s} mean AUC {statistics.fmean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})")
    for name, column in (("linear", 0), ("mlp", 1)):
        wins = sum(row[column] > row[2] for row in rows)
        report(f"{name} beats the baseline on {wins} of {len(rows)} splits")

    written = record.write(
        "A probe's held-out AUC over many problem splits",
        f"Task `{args.task}`, {args.problems} problems, {args.rollouts} rollouts x {args.continuations} "
        f"continuations, labelling read from the generation cache `{args.cache}`.\n\n```\n" + "\n".join(lines) + "\n```",
        {"args": {k: str(v) for k, v in vars(args).items()}, "steps": len(steps), "replayed_samples": replayed,
         "splits": [{"linear": r[0], "mlp": r[1], "mean_logprob": r[2]} for r in rows]},
    )
    print(f"written: {written} and .json")


if __name__ == "__main__":
    main()
