"""How many tokens DeepConf saves against self-consistency, and at what accuracy.

On a task's problems, runs majority@N (N samples, majority vote), DeepConf online
and DeepConf offline (for each `--keep` share) through `orchestra.run`, all with
the same sampling settings, seed and node id: trace i of every method is the same
sample (an online trace the engine stopped is a token prefix of it), so the
comparison is paired on the samples as well as on the problems.

For each method it prints and writes accuracy (exact: score >= 1) with a 95%
bootstrap interval, completion and total tokens per problem, the share of
majority@N's tokens saved, and the paired accuracy difference against majority@N
with its interval (`orchestra.significance`): "equal accuracy" means that
interval includes 0. Results go to bench/results/deepconf-<stamp>.json and .md
(date, machine, load, command)
with the date, the machine and the command.

    .venv/bin/python bench/deepconf_tokens.py --problems 200
    .venv/bin/python bench/deepconf_tokens.py --problems 200 --keep 0.9 0.1 --window 8

Costs are logical (replayed samples count what they would have cost), so a rerun
over the generation cache measures the same tokens in a fraction of the time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orchestra
from orchestra.recipe import Recipe
from orchestra.results import RunResult
from orchestra.significance import mean_interval, paired_difference, problems_to_detect
from results_file import RESULTS, ResultsFile

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
#: Every method's generating node has this id: the node's seed, hence its samples, are shared.
NODE = "traces"


def recipes(args: argparse.Namespace) -> dict[str, dict]:
    """label -> recipe: majority@N first (the baseline), then DeepConf online and offline per keep."""
    model = {"model": args.model, "dtype": args.dtype}
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    out = {
        f"majority@{args.n}": {
            "nodes": [
                {"id": NODE, "technique": "sample", "params": {"n": args.n, **sampling}},
                {"id": "vote", "technique": "majority_vote", "inputs": [NODE]},
            ],
            "output": "vote",
        }
    }
    common = {"n": args.n, "window": args.window, "score": args.score, **sampling}
    for keep in args.keep:
        out[f"deepconf-online keep={keep}"] = {"nodes": [{"id": NODE, "technique": "deepconf", "params": {
            **common, "mode": "online", "keep": keep, "warmup": args.warmup, "batch": args.batch,
            "consensus": args.consensus,
        }}]}
        if not args.no_offline:
            out[f"deepconf-offline keep={keep}"] = {"nodes": [{"id": NODE, "technique": "deepconf", "params": {
                **common, "mode": "offline", "keep": keep,
            }}]}
    return {label: {"name": label.replace(" ", "_").replace("=", "").replace("@", "_at_"), "seed": args.seed,
                    "models": {"m": model}, **recipe} for label, recipe in out.items()}


def run_method(label: str, recipe: dict, args: argparse.Namespace) -> dict:
    """Per-problem correctness and tokens of one recipe, plus DeepConf's trace counts."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result: RunResult = orchestra.run(
            Recipe.model_validate(recipe), args.task, split=args.split, limit=args.problems,
            out=folder, cache=False if args.no_cache else (args.cache or True), concurrency=args.concurrency,
        )
        seconds = time.perf_counter() - started
        counts = _trace_counts(Path(folder) / "trace.jsonl")
    failed = [r for r in result.results if r.status != "ok"]
    if failed:
        raise SystemExit(f"{label}: {len(failed)} problem(s) did not finish, e.g. {failed[0].problem_id}: {failed[0].error}")
    problems = [
        {
            "problem_id": r.problem_id,
            "correct": float(r.correct),
            "completion_tokens": r.usage.completion_tokens,
            "total_tokens": r.usage.total_tokens,
            **counts.get(r.problem_id, {}),
        }
        for r in result.results
    ]
    return {"label": label, "recipe": recipe, "seconds": seconds, "problems": problems}


def _trace_counts(path: Path) -> dict[str, dict[str, float]]:
    """problem id -> DeepConf's traces / kept / stopped (from its output's scores; none for majority)."""
    counts = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        outputs = entry.get("outputs") or []
        if entry.get("node") == NODE and outputs and "traces" in outputs[0].get("scores", {}):
            scores = outputs[0]["scores"]
            counts[entry["problem_id"]] = {k: scores[k] for k in ("traces", "kept", "stopped")}
    return counts


def summarize(method: dict, baseline: dict) -> dict:
    """Accuracy and tokens with intervals, and the paired comparison with the baseline."""
    rows, base = method["problems"], baseline["problems"]
    assert [r["problem_id"] for r in rows] == [r["problem_id"] for r in base], "methods ran different problems"
    correct = [r["correct"] for r in rows]
    summary = {
        "accuracy": mean_interval(correct).model_dump(),
        "completion_tokens": mean_interval([r["completion_tokens"] for r in rows]).model_dump(),
        "total_tokens": mean_interval([r["total_tokens"] for r in rows]).model_dump(),
        "seconds": method["seconds"],
    }
    for kind in ("completion_tokens", "total_tokens"):
        spent, baseline_spent = sum(r[kind] for r in rows), sum(r[kind] for r in base)
        summary[f"{kind}_saved"] = 1 - spent / baseline_spent if baseline_spent else 0.0
    if method is not baseline:
        difference = paired_difference(correct, [r["correct"] for r in base])
        discordance = (difference.only_a + difference.only_b) / difference.problems
        summary["difference"] = {**difference.model_dump(), "significant": difference.significant,
                                 "problems_for_10_points": problems_to_detect(0.10, discordance=discordance or None)}
    for key in ("traces", "kept", "stopped"):
        if rows and key in rows[0]:
            summary[key] = sum(r[key] for r in rows) / len(rows)
    return summary


def table(methods: list[dict], summaries: list[dict]) -> str:
    baseline = methods[0]["label"]
    lines = [
        f"| method | accuracy [95% CI] | vs {baseline} [95% CI] | completion tokens/problem | saved "
        "| total tokens/problem | saved | traces / kept / stopped per problem |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, s in zip(methods, summaries):
        accuracy = s["accuracy"]
        if "difference" in s:
            d = s["difference"]
            verdict = "significant" if d["significant"] else "equal within CI"
            vs = f"{100 * d['estimate']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] ({verdict})"
        else:
            vs = "—"
        traces = f"{s['traces']:.1f} / {s['kept']:.1f} / {s['stopped']:.1f}" if "traces" in s else "—"
        lines.append(
            f"| {method['label']} | {accuracy['estimate']:.1%} [{accuracy['low']:.1%}, {accuracy['high']:.1%}] | {vs} "
            f"| {s['completion_tokens']['estimate']:.0f} | {s['completion_tokens_saved']:+.1%} "
            f"| {s['total_tokens']['estimate']:.0f} | {s['total_tokens_saved']:+.1%} | {traces} |"
        )
    for method, s in zip(methods, summaries):
        if "difference" in s:
            lines.append(f"\n{method['label']}: a 10-point difference from {baseline} needs about "
                         f"{s['difference']['problems_for_10_points']} problems to be seen (McNemar, 80% power).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--split", default="test")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("-n", "--n", type=int, default=16, help="traces per problem (majority@n; DeepConf's most)")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.9], help="DeepConf's kept share(s) η")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--score", default="lowest_group", choices=["lowest_group", "mean", "tail", "bottom_share"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--consensus", type=float, default=0.95)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-offline", action="store_true", help="skip DeepConf offline")
    parser.add_argument("--cache", help="generation cache file (default: orchestra's own)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    record = ResultsFile("deepconf", args.out)

    methods = []
    for label, recipe in recipes(args).items():
        print(f"running {label} on {args.problems} problems ...", flush=True)
        methods.append(run_method(label, recipe, args))
    summaries = [summarize(method, methods[0]) for method in methods]
    rendered = table(methods, summaries)
    print(rendered)
    written = record.write(
        f"DeepConf against majority@{args.n}: accuracy and tokens",
        f"Model {args.model} ({args.dtype}). "
        f"Task `{args.task}`, {args.split} split, {len(methods[0]['problems'])} problems; temperature "
        f"{args.temperature}, at most {args.max_tokens} tokens per trace; DeepConf window {args.window}, "
        f"score {args.score}, warm-up {args.warmup}, rounds of {args.batch}, consensus {args.consensus}. "
        "Accuracy is exact (score ≥ 1); intervals are 95% bootstrap over problems; the difference is "
        "paired on the same problems, and \"equal within CI\" means its interval includes 0.\n\n"
        f"{rendered}\n",
        {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "methods": [{**method, "summary": summary} for method, summary in zip(methods, summaries)],
        },
    )
    print(f"wrote {written} and .json")


if __name__ == "__main__":
    main()
