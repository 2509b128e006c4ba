"""Does the compute pay? Recipes against greedy (and a reference) on the same problems, with CIs.

Runs each recipe through `orchestra.run` on one task split (the generation cache
replays pools that recipes share), then prints and writes, per recipe: exact
accuracy with its 95% bootstrap CI, tokens per problem and their ratio to the
baseline's, and the paired difference against the baseline (the first recipe)
and against `--reference` with CIs and verdicts. Accuracy is exact (score >= 1).

    .venv/bin/python bench/compute_pays.py recipes/greedy.yaml recipes/majority_16.yaml \\
        recipes/best_of_16_orm.yaml --reference majority_16 -n 200

Writes bench/results/compute-pays-<stamp>.json and .md (date, machine, command).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import orchestra
from orchestra.backends.local_engine.precision import _cpu_name
from orchestra.recipe import load_recipe
from orchestra.significance import mean_interval, paired_difference, problems_to_detect

NAMED_TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", type=Path, help="recipe files; the first is the baseline")
    parser.add_argument("--task", default=NAMED_TASK)
    parser.add_argument("--split", default="test")
    parser.add_argument("-n", "--problems", type=int, default=200)
    parser.add_argument("--reference", help="name of a second recipe every other is compared with (e.g. majority_16)")
    parser.add_argument("--cache", default=True, help="generation cache (default: orchestra's)")
    parser.add_argument("--tag", default="compute-pays", help="results file name prefix")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    runs = {}
    for path in args.recipes:
        recipe = load_recipe(path)
        began = time.monotonic()
        result = orchestra.run(recipe, args.task, split=args.split, limit=args.problems, cache=args.cache)
        runs[recipe.name] = (result, time.monotonic() - began)
        print(f"{recipe.name}: {result.accuracy:.1%} in {runs[recipe.name][1]:.0f} s", file=sys.stderr, flush=True)

    names = list(runs)
    baseline = names[0]
    correct = {name: [float(r.correct) for r in result.results] for name, (result, _) in runs.items()}
    base_tokens = runs[baseline][0].summary.tokens_per_problem or 1.0
    rows = []
    for name, (result, seconds) in runs.items():
        s = result.summary
        row = {
            "recipe": name,
            "problems": s.problems,
            "accuracy": mean_interval(correct[name]).model_dump(),
            "coverage": s.coverage,
            "tokens_per_problem": s.tokens_per_problem,
            "tokens_vs_baseline": s.tokens_per_problem / base_tokens,
            "replayed_samples": s.usage.cache_hits,
            "seconds": seconds,
        }
        for other in (baseline, args.reference):
            if other and other != name and other in runs:
                diff = paired_difference(correct[name], correct[other])
                row[f"vs_{other}"] = {**diff.model_dump(), "significant": diff.significant}
        rows.append(row)

    lines = [
        f"# Does the compute pay? {args.task} · {args.split} · {args.problems} problems",
        "",
        f"- date: {started}",
        f"- command: {' '.join(shlex.quote(a) for a in sys.argv)}",
        f"- machine: {_cpu_name()}, python {platform.python_version()}, torch {_torch_version()}",
        "- accuracy is exact (score >= 1); CIs are 95% percentile bootstrap over problems (4000 resamples, seed 0)",
        "",
        f"| recipe | acc [95% CI] | cover | tok/prob | × {baseline} tokens | vs {baseline} | "
        + (f"vs {args.reference} |" if args.reference else ""),
        "|---|---|---:|---:|---:|---|" + ("---|" if args.reference else ""),
    ]
    for row in rows:
        acc = row["accuracy"]
        cells = [
            row["recipe"],
            f"{acc['estimate']:.1%} [{acc['low']:.1%}, {acc['high']:.1%}]",
            f"{row['coverage']:.1%}",
            f"{row['tokens_per_problem']:.0f}",
            f"{row['tokens_vs_baseline']:.1f}×",
        ]
        for other in (baseline, args.reference):
            if other is None:
                continue
            diff = row.get(f"vs_{other}")
            cells.append(
                "—" if diff is None else
                f"{100 * diff['estimate']:+.1f} pts [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"
                + (" significant" if diff["significant"] else " not significant")
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"A 10-point paired difference needs ≈{problems_to_detect(0.10)} problems in the worst case "
              "(the two recipes disagree on half the problems); fewer when they agree more."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{args.tag}-{stamp}.md").write_text(text)
    (RESULTS / f"{args.tag}-{stamp}.json").write_text(json.dumps(
        {"date": started, "command": sys.argv, "task": args.task, "split": args.split, "problems": args.problems,
         "machine": _cpu_name(), "rows": rows}, indent=2) + "\n")
    print(f"written: bench/results/{args.tag}-{stamp}.md and .json")


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
