"""Sparse activation on the local engine: decode speed against quality, CoreInfer and TEAL.

For each method and sparsity, in one process on the default model (float32, batch 1):

- speed: decode tokens/s of the engine with the sparse MLPs and with the dense
  MLPs, measured in alternating order (dense, sparse, sparse, dense, ...) on the
  same prompt with a fixed number of new tokens (EOS suppressed), so both sides
  see the same machine load; the speedup is their ratio;
- agreement: greedy answers to the task's problems against the dense greedy
  answers — the share of the dense tokens reproduced before the first
  difference (1.0: identical), averaged over problems;
- accuracy: the share of those greedy answers exactly right, against dense.

A kernel section times the two MLP products of one layer at batch 1 — dense
`F.linear` against the column-skipping GEMV (`kernels/cpu_sparse_gemv.py`) at
each sparsity — the ceiling TEAL's CPU path can reach.

    .venv/bin/python bench/sparse_speed_vs_quality.py       # 30 problems, sparsities 0..0.6
    .venv/bin/python bench/sparse_speed_vs_quality.py --problems 10 --sparsities 0,0.5

Results (markdown + JSON, with date, machine, load and command) go under bench/results/
(`--out` names another folder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams
from orchestra.kernels.cpu_sparse_gemv import thresholded_gemv
from orchestra.kernels.sparse_mlp import build_mlp_plugin, slice_mlp
from orchestra.kernels.teal_calibration import magnitude_threshold
from orchestra.metrics import accuracy
from orchestra.models import load_pretrained
from orchestra.paths import teal_thresholds_folder
from orchestra.tasks import load_task
from results_file import RESULTS, ResultsFile

MODEL = "smollm2-135m-instruct"
TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
SPEED_PROMPT = "Explain step by step how to add 27 and 58, then check the result by subtraction."


@dataclass
class Row:
    method: str
    sparsity: float
    dense_tokens_per_second: float
    sparse_tokens_per_second: float
    speedup: float  # median over rounds of sparse/dense, each pair timed back to back
    token_agreement: float
    identical_answers: int
    accuracy: float
    dense_accuracy: float
    problems: int


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def chat_ids(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode_rate(engine: InferenceEngine, plugin, prompt: list[int], tokens: int) -> float:
    """Batch-1 decode tokens/s (whole decode phase: forward, sampling, bookkeeping) with `plugin`."""
    engine.runner.mlp_plugin = plugin
    engine.clear_prefix_cache()
    engine.reset_stats()
    engine.generate(prompt, SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0))
    stats = engine.stats
    return stats.decode_steps / stats.decode_seconds


def greedy_answers(engine: InferenceEngine, plugin, prompts: list[list[int]], max_tokens: int) -> list[tuple[int, ...]]:
    engine.runner.mlp_plugin = plugin
    engine.clear_prefix_cache()
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return [engine.generate(prompt, params)[0].token_ids for prompt in prompts]


def agreement(dense: tuple[int, ...], sparse: tuple[int, ...]) -> float:
    """Share of the dense tokens the sparse answer reproduces before their first difference."""
    same = 0
    for a, b in zip(dense, sparse):
        if a != b:
            break
        same += 1
    return 1.0 if dense == sparse else same / max(len(dense), 1)


def kernel_timings(sparsities: list[float], hidden: int, width: int, layers: int, repeats: int = 30) -> list[dict]:
    """All layers' MLP products at batch 1, weights streamed from memory as in a decode step
    (`layers` distinct weight sets, too big for the caches): dense `F.linear`, TEAL's
    column-skipping GEMV, and CoreInfer's sliced dense products."""
    generator = torch.Generator().manual_seed(0)
    gate_ups = [torch.randn(2 * width, hidden, generator=generator).t().contiguous().t() for _ in range(layers)]
    downs = [torch.randn(hidden, width, generator=generator).t().contiguous().t() for _ in range(layers)]
    x = torch.randn(hidden, generator=generator)
    a = torch.randn(width, generator=generator)
    rows = []
    for sparsity in sparsities:
        tx, ta = magnitude_threshold(x, sparsity), magnitude_threshold(a, sparsity)
        keep = max(1, round(width * (1 - sparsity)))
        neurons = torch.arange(keep)
        sliced = [slice_mlp(g, d, neurons) for g, d in zip(gate_ups, downs)]

        def dense():
            for g, d in zip(gate_ups, downs):
                F.linear(x[None], g), F.linear(a[None], d)

        def columns():
            for g, d in zip(gate_ups, downs):
                thresholded_gemv(x, g, tx), thresholded_gemv(a, d, ta)

        def core():
            for g, d in sliced:
                F.linear(x[None], g), F.linear(a[None, :keep], d)

        contenders = {"dense": dense, "columns": columns, "sliced": core}
        spent: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():
            fn()
        for i in range(repeats):
            names = list(contenders) if i % 2 == 0 else list(reversed(contenders))
            for name in names:
                began = time.perf_counter()
                contenders[name]()
                spent[name].append(time.perf_counter() - began)
        rows.append({  # medians: robust to the load spikes of a shared machine
            "sparsity": sparsity,
            **{f"{name}_ms": statistics.median(spent[name]) * 1e3 for name in contenders},
            "columns_speedup": statistics.median(d / c for d, c in zip(spent["dense"], spent["columns"])),
            "sliced_speedup": statistics.median(d / c for d, c in zip(spent["dense"], spent["sliced"])),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=30, help="task problems for agreement and accuracy (0: speed only)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most new tokens per greedy answer")
    parser.add_argument("--speed-tokens", type=int, default=64, help="new tokens per timed decode")
    parser.add_argument("--speed-rounds", type=int, default=3, help="alternating dense/sparse timing rounds")
    parser.add_argument("--sparsities", default="0,0.25,0.4,0.5,0.6")
    parser.add_argument("--methods", default="coreinfer,teal")
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results files")
    args = parser.parse_args()
    record = ResultsFile("sparse_speed_vs_quality", args.out)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    methods = args.methods.split(",")

    torch.manual_seed(0)
    model, tokenizer = load_pretrained(MODEL, "float32")
    engine = InferenceEngine(model, tokenizer, EngineConfig(max_batch_size=1))
    task = load_task(args.task)
    problems = task.problems("test", limit=args.problems) if args.problems else []
    prompts = [chat_ids(tokenizer, [m.model_dump() for m in p.messages]) for p in problems]
    speed_prompt = chat_ids(tokenizer, [{"role": "user", "content": SPEED_PROMPT}])

    def score(tokens_per_problem) -> list[float]:
        texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens_per_problem]
        return [task.score(p, text, task.extract_answer(text)) for p, text in zip(problems, texts)]

    log(f"dense greedy answers to {len(problems)} problems")
    dense_answers = greedy_answers(engine, None, prompts, args.max_tokens)
    dense_scores = score(dense_answers) if prompts else [0.0]
    dense_accuracy = accuracy(dense_scores)  # exact: partial credit is wrong
    log(f"dense accuracy {dense_accuracy:.3f}")

    rows: list[Row] = []
    for method in methods:
        for sparsity in sparsities:
            plugin = build_mlp_plugin(method, sparsity, model, tokenizer, MODEL, teal_thresholds_folder())
            dense_rates, sparse_rates = [], []
            decode_rate(engine, plugin, speed_prompt, 8)  # warm-up
            for round_ in range(args.speed_rounds):
                order = ("dense", "sparse") if round_ % 2 == 0 else ("sparse", "dense")
                for side in order:
                    rate = decode_rate(engine, None if side == "dense" else plugin, speed_prompt, args.speed_tokens)
                    (dense_rates if side == "dense" else sparse_rates).append(rate)
            answers = greedy_answers(engine, plugin, prompts, args.max_tokens) if prompts else []
            scores = score(answers) if prompts else [0.0]
            dense_rate = sum(dense_rates) / len(dense_rates)
            sparse_rate = sum(sparse_rates) / len(sparse_rates)
            row = Row(
                method=method,
                sparsity=sparsity,
                dense_tokens_per_second=dense_rate,
                sparse_tokens_per_second=sparse_rate,
                speedup=statistics.median(s / d for s, d in zip(sparse_rates, dense_rates)),
                token_agreement=sum(agreement(d, s) for d, s in zip(dense_answers, answers)) / max(len(answers), 1),
                identical_answers=sum(d == s for d, s in zip(dense_answers, answers)),
                accuracy=accuracy(scores),
                dense_accuracy=dense_accuracy,
                problems=len(problems),
            )
            rows.append(row)
            log(
                f"{method} {sparsity:.2f}: {row.sparse_tokens_per_second:.1f} vs {row.dense_tokens_per_second:.1f} tok/s "
                f"(x{row.speedup:.2f}), agreement {row.token_agreement:.2f}, accuracy {row.accuracy:.3f} "
                f"(dense {dense_accuracy:.3f})"
            )
    engine.runner.mlp_plugin = None
    engine.close()
    config = model.config
    log("kernel timings")
    kernels = kernel_timings(
        [s for s in sparsities if s > 0] or [0.5], config.hidden_size, config.intermediate_size, config.num_hidden_layers
    )
    report(args, rows, kernels, record)


def report(args, rows: list[Row], kernels: list[dict], record: ResultsFile) -> None:
    lines = [
        f"# Sparse activation — {MODEL}, float32, batch 1, {torch.get_num_threads()} threads",
        "",
        f"task `{args.task}`, {rows[0].problems if rows else 0} problems, greedy, at most {args.max_tokens} new tokens; "
        f"speed: {args.speed_rounds} alternating rounds of {args.speed_tokens} tokens per side; "
        "tok/s are means, the speedup is the median of the rounds' sparse/dense ratios",
        "",
        "| method | sparsity | dense tok/s | sparse tok/s | speedup | token agreement | identical answers | accuracy (dense) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        quality = (
            f"{r.token_agreement:.2f} | {r.identical_answers}/{r.problems} | {r.accuracy:.3f} ({r.dense_accuracy:.3f})"
            if r.problems
            else "— | — | —"  # speed-only run (--problems 0)
        )
        lines.append(
            f"| {r.method} | {r.sparsity:.2f} | {r.dense_tokens_per_second:.1f} | {r.sparse_tokens_per_second:.1f} | "
            f"{r.speedup:.2f}x | {quality} |"
        )
    lines += [
        "",
        "All layers' MLP products (gate_up + down) at batch 1, weights streamed from memory (medians):",
        "",
        "| sparsity | dense ms | TEAL columns ms (speedup) | CoreInfer sliced ms (speedup) |",
        "|---|---|---|---|",
    ]
    for k in kernels:
        lines.append(
            f"| {k['sparsity']:.2f} | {k['dense_ms']:.1f} | {k['columns_ms']:.1f} ({k['columns_speedup']:.2f}x) | "
            f"{k['sliced_ms']:.1f} ({k['sliced_speedup']:.2f}x) |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    written = record.write(
        lines[0].removeprefix("# "), "\n".join(lines[2:]),
        {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows], "kernels": kernels},
    )
    print(f"written: {written} and .json")


if __name__ == "__main__":
    main()
