"""Does the compute pay? Recipes against greedy (and a reference) on the same problems, with CIs.

Runs each recipe through `orchestra.run` on one task split (the generation cache
replays pools that recipes share), then prints and writes, per recipe: exact
accuracy with its 95% bootstrap CI, tokens per problem and their ratio to the
baseline's, and the paired difference against the baseline (the first recipe)
and against `--reference` with CIs and verdicts. Accuracy is exact (score >= 1).

    .venv/bin/python bench/compute_pays.py recipes/greedy.yaml recipes/majority_16.yaml \\
        recipes/best_of_16_orm.yaml --reference majority_16 -n 200

Writes bench/results/compute-pays-<stamp>.json and .md (date, machine, load, command; `--out`
names another folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orchestra
from orchestra.recipe import load_recipe
from orchestra.comparison import compare
from orchestra.report import accuracy_text, comparison_lines
from orchestra.significance import Difference, Interval
from results_file import RESULTS, ResultsFile

NAMED_TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", type=Path, help="recipe files; the first is the baseline")
    parser.add_argument("--task", default=NAMED_TASK)
    parser.add_argument("--split", default="test")
    parser.add_argument("-n", "--problems", type=int, default=200)
    parser.add_argument("--reference", help="name of a second recipe every other is compared with (e.g. majority_16)")
    parser.add_argument("--cache", default=True, help="generation cache file (default: orchestra's)")
    parser.add_argument("--tag", default="compute-pays", help="results file name prefix")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results files")
    args = parser.parse_args()

    record = ResultsFile(args.tag, args.out)
    runs = {}
    for path in args.recipes:
        recipe = load_recipe(path)
        began = time.monotonic()
        result = orchestra.run(recipe, args.task, split=args.split, limit=args.problems, cache=args.cache)
        runs[recipe.name] = (result, time.monotonic() - began)
        print(f"{recipe.name}: {result.accuracy:.1%} in {runs[recipe.name][1]:.0f} s", file=sys.stderr, flush=True)

    results = [result for result, _ in runs.values()]
    overview = compare(results)
    others = [results[0]] + ([runs[args.reference][0]] if args.reference in runs else [])
    base_tokens = results[0].summary.tokens_per_problem or 1.0
    rows = []
    for (result, seconds), accuracy in zip(runs.values(), overview.recipes):
        s = result.summary
        row = {
            "recipe": s.recipe, "problems": s.problems, "accuracy": accuracy.accuracy.model_dump(),
            "coverage": s.coverage, "tokens_per_problem": s.tokens_per_problem,
            "completion_tokens_per_problem": s.usage.completion_tokens / max(1, s.problems),
            "tokens_vs_baseline": s.tokens_per_problem / base_tokens, "replayed_samples": s.usage.cache_hits,
            "seconds": seconds,
        }
        for other in others:
            if other is not result:
                [pair] = compare([result, other]).differences
                row[f"vs_{pair.baseline}"] = {**pair.model_dump(), "significant": pair.difference.significant}
        rows.append(row)
    reference = args.reference if args.reference in runs else None

    baseline = results[0].summary.recipe
    header = f"| recipe | acc [95% CI] | cover | tok/prob | completion tok/prob | × {baseline} tokens | vs {baseline} |"
    if reference:
        header += f" vs {args.reference} |"
    lines = [
        "- acc is exact (score >= 1); CIs: 95% percentile bootstrap over problems (4000 resamples, seed 0); "
        "differences are paired over the same problems",
        "",
        header,
        "|---|---|---:|---:|---:|---:|---|" + ("---|" if reference else ""),
    ]
    for row in rows:
        cells = [
            row["recipe"], accuracy_text(row["accuracy"]["estimate"], Interval(**row["accuracy"])),
            f"{row['coverage']:.1%}", f"{row['tokens_per_problem']:.0f}",
            f"{row['completion_tokens_per_problem']:.0f}", f"{row['tokens_vs_baseline']:.1f}×",
        ]
        for other in (baseline, args.reference if reference else None):
            if other is None:
                continue
            pair = row.get(f"vs_{other}")
            cells.append("—" if pair is None else f"{Difference(**pair['difference']).points()}, "
                         f"{'significant' if pair['significant'] else 'not significant'}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *comparison_lines(compare([results[0], *results[1:]]))[-1:]]
    text = "\n".join(lines) + "\n"
    print(text)
    written = record.write(
        f"Does the compute pay? {args.task} · {args.split} · {args.problems} problems", text,
        {"task": args.task, "split": args.split, "problems": args.problems, "rows": rows},
    )
    print(f"written: {written} and .json")


if __name__ == "__main__":
    main()
