"""Equal-budget comparison of step-wise search methods: accuracy vs generated tokens.

Every method runs through the normal engine (budgets, ledger) on the same
problems with the same step settings and the same budget unit, `rollouts` (N):
PRM best-of-N, PRM-weighted vote, beam search, DVTS, MCTS, best-first search and
particle filtering, each at every N given, with one PRM for the whole grid and
others at the points `--extra` names. A greedy answer is the baseline. Each row
records accuracy, generator (completion) tokens, PRM calls and tokens (all calls
beyond the generator's steps), prompt tokens and the prefill the prefix cache
saved (`cached_prompt_tokens`), and under `measured` when, on what machine, under
what load and by which command it ran.

Rows are appended to a JSONL file as they finish, so an interrupted grid resumes
where it stopped; `--report` turns the rows into a markdown table and a PNG.

    python bench/stepwise_scaling.py --problems 20 --rollouts 1,2,4,8 --prm self_certainty \\
        --extra llm:4 --out bench/results/stepwise
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results_file import measurement_context

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[%2B]"
MODEL = {"model": "smollm2-135m-instruct"}
#: Step settings of every method. SmolLM2-135M's answers to these problems are 50-80 tokens and
#: rarely hold a blank line, so steps end at each line: with "\n\n" most answers are one step
#: and every search collapses into best-of-N.
STEPS = {"delimiter": "\n", "max_steps": 8, "step_tokens": 32, "temperature": 0.7}

#: PRM name -> the options its spec needs. The probe is the shipped one trained on this task
#: (`orchestra reward train`, steps cut at blank lines; here it scores line-steps).
PRM_OPTIONS = {"probe": {"path": str(Path(__file__).resolve().parent.parent / "recipes/probes/smollm2-basic-arithmetic.safetensors")}}

#: label -> (technique, extra params); `select` decides best-of-N vs weighted vote.
METHODS: dict[str, tuple[str, dict]] = {
    "best_of_n": ("prm_best_of_n", {"select": "best"}),
    "weighted_vote": ("prm_best_of_n", {"select": "vote"}),
    "beam_search": ("beam_search", {}),
    "dvts": ("dvts", {}),
    "mcts": ("mcts", {"branching": 2}),
    "best_first": ("best_first", {"branching": 2}),
    "particle_filtering": ("particle_filtering", {}),
}


def recipe_for(method: str, rollouts: int, prm: str) -> dict:
    if method == "greedy":
        node = {"id": "search", "technique": "sample", "params": {"n": 1, "temperature": 0.0, "max_tokens": 288}}
    else:
        technique, extra = METHODS[method]
        params = {**STEPS, **extra, "rollouts": rollouts, "prm": {"name": prm, "options": PRM_OPTIONS.get(prm, {})}}
        if technique in ("beam_search", "dvts"):
            params["beam_width"] = min(2, rollouts)
        node = {"id": "search", "technique": technique, "params": params}
    return {"name": f"{method}-{prm}-{rollouts}", "models": {"small": MODEL}, "seed": 0, "nodes": [node]}


def run_point(method: str, rollouts: int, prm: str, problems: int, task: str) -> dict:
    from orchestra import run
    from orchestra.recipe import Recipe

    started = time.monotonic()
    result = run(Recipe.model_validate(recipe_for(method, rollouts, prm)), task, limit=problems, cache=False)
    usage = result.summary.usage
    count = result.summary.problems
    return {
        "method": method,
        "prm": prm if method != "greedy" else None,
        "rollouts": rollouts,
        "problems": count,
        "accuracy": sum(r.correct for r in result.results) / count,  # exact answers (the task gives partial credit)
        "errors": result.summary.errors,
        "generated_tokens_per_problem": usage.completion_tokens / count,
        "prompt_tokens_per_problem": usage.prompt_tokens / count,
        "prefill_saved_per_problem": usage.cached_prompt_tokens / count,
        "calls_per_problem": usage.calls / count,
        "seconds": time.monotonic() - started,
    }


def points(rollouts: list[int], prm: str, extra: list[str], methods: list[str]) -> list[tuple[str, int, str]]:
    todo = [("greedy", 1, prm)]
    todo += [(method, n, prm) for n in rollouts for method in methods]
    for item in extra:  # "llm:4" -> every method at N=4 with the llm PRM
        name, _, n = item.partition(":")
        todo += [(method, int(n), name) for method in methods]
    return todo


def report(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: (r["prm"] or "", r["method"], r["rollouts"]))
    lines = [
        "| method | PRM | N | problems | accuracy | generated tokens / problem | prompt tokens / problem "
        "| prefill saved / problem | calls / problem | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['prm'] or '-'} | {r['rollouts']} | {r['problems']} | {r['accuracy']:.2f} "
            f"| {r['generated_tokens_per_problem']:.0f} | {r['prompt_tokens_per_problem']:.0f} "
            f"| {r['prefill_saved_per_problem']:.0f} ({r['prefill_saved_per_problem'] / max(r['prompt_tokens_per_problem'], 1):.0%}) "
            f"| {r['calls_per_problem']:.1f} | {r['seconds']:.0f} |"
        )
    lines += ["", "Each row of the .jsonl beside this file records when, on what machine, under what load and by "
              "which command it was measured (`measured`; rows written before 2026-11-29 do not)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    prms = sorted({r["prm"] for r in rows if r["prm"]})
    if not prms:
        return
    fig, axes = plt.subplots(1, len(prms), figsize=(7 * len(prms), 5), squeeze=False)
    greedy = [r for r in rows if r["method"] == "greedy"]
    for ax, prm in zip(axes[0], prms):
        for method in METHODS:
            curve = sorted((r for r in rows if r["method"] == method and r["prm"] == prm), key=lambda r: r["rollouts"])
            if not curve:
                continue
            xs = [r["generated_tokens_per_problem"] for r in curve]
            ax.plot(xs, [r["accuracy"] for r in curve], marker="o", label=method)
            for r, x in zip(curve, xs):
                ax.annotate(str(r["rollouts"]), (x, r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for r in greedy:
            ax.axhline(r["accuracy"], color="gray", linestyle="--", linewidth=1, label="greedy")
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per problem (log); labels: rollouts N")
        ax.set_ylabel("accuracy")
        ax.set_title(f"PRM: {prm}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    fig.suptitle(f"Step-wise search on {rows[0]['problems']} problems, SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--rollouts", default="1,2,4,8", help="comma-separated N values")
    parser.add_argument("--prm", default="self_certainty", help="the PRM of the full grid")
    parser.add_argument("--extra", default="", help="more PRM points, e.g. llm:4,llm:8 (every method at that N)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--out", type=Path, default=Path("bench/results/stepwise"))
    parser.add_argument("--report", action="store_true", help="only write the table and plot from the rows so far")
    args = parser.parse_args()
    rows_path = args.out.with_suffix(".jsonl")
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    if not args.report:
        done = {(r["method"], r["rollouts"], r["prm"]) for r in rows}
        methods = [m for m in args.methods.split(",") if m]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
        todo = points([int(n) for n in args.rollouts.split(",")], args.prm, [e for e in args.extra.split(",") if e], methods)
        for method, n, prm in todo:
            key = (method, n, None if method == "greedy" else prm)
            if key in done:
                continue
            before = measurement_context()
            row = run_point(method, n, prm, args.problems, args.task)
            row["measured"] = {**before, "load_at_end": measurement_context()["load"]}
            rows.append(row)
            done.add(key)
            with rows_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            report(rows, args.out)
    report(rows, args.out)


if __name__ == "__main__":
    main()
