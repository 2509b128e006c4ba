"""Where a decode step of the local engine's runner spends its time, operator by operator.

Batch-1 decode on a CPU should be bound by reading the weights once per token;
when it runs far below that limit, the profile says what else the step does.
This script decodes a few steps of the default model at the given batch size,
quantization and dtype under `torch.profiler`, and writes the operators with
the most time per step — calls per step, ms per step, share of the step — beside
the step's wall time without the profiler. Where the compiled step
(`fused_decode`) serves, the profile is of it, and the Python step is timed beside it.

    .venv/bin/python bench/step_profile.py --quantization w8a8 --batch 1
    .venv/bin/python bench/step_profile.py --quantization int4 --batch 16

Results go to bench/results/step_profile-*.md and .json (`results_file.py`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from orchestra.backends import ModelSpec
from orchestra.backends.local import LocalBackend
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import PrefillRow

from results_file import RESULTS, ResultsFile

CONTEXT = 70  # prompt tokens each row holds before the timed steps


def decode_steps(runner, pool: KVPool, batch: int, first: int, steps: int) -> None:
    tokens = torch.full((batch,), 11)
    for step in range(steps):
        runner.decode(pool, tokens, torch.full((batch,), first + step))


def ms_per_step(runner, pool: KVPool, batch: int, steps: int) -> float:
    """Wall milliseconds per decode step over positions CONTEXT+2 onward, after two warm-up steps."""
    decode_steps(runner, pool, batch, CONTEXT, 2)
    began = time.perf_counter()
    decode_steps(runner, pool, batch, CONTEXT + 2, steps)
    return (time.perf_counter() - began) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantization", default="none", help="none, int8, int4 or w8a8")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="steps timed, and steps profiled")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = ResultsFile("step_profile", args.out)
    backend = LocalBackend(ModelSpec(dtype=args.dtype, quantization=args.quantization, device="cpu"))
    runner = backend.engine.runner
    pool = KVPool(layers=runner.num_layers, kv_heads=runner.kv_heads, head_dim=runner.head_dim,
                  dtype=runner.dtype, device=runner.device, byte_limit=1 << 34)
    pool.reserve(args.batch, CONTEXT + 3 * args.steps + 4)
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(slot, 0, tuple(range(10, 10 + CONTEXT))) for slot in range(args.batch)])
        step_ms = ms_per_step(runner, pool, args.batch, args.steps)
        python_ms = None
        if runner.fused_decode is not None:  # the Python step beside it, over the same positions
            compiled, runner.fused_decode = runner.fused_decode, None
            python_ms = ms_per_step(runner, pool, args.batch, args.steps)
            runner.fused_decode = compiled
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            decode_steps(runner, pool, args.batch, CONTEXT + 2 + args.steps, args.steps)
    events = sorted(profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events) / args.steps
    rows = [
        {"operator": e.key, "calls_per_step": e.count / args.steps,
         "ms_per_step": e.self_cpu_time_total / args.steps / 1000, "share": e.self_cpu_time_total / total_us}
        for e in events[: args.top]
    ]
    label = f"{args.dtype}" + ("" if args.quantization == "none" else f", {args.quantization}")
    lines = [
        f"SmolLM2-135M-Instruct ({label}), runner decode step at batch {args.batch}, {CONTEXT}-token context, "
        f"torch threads {torch.get_num_threads()}.",
        "",
        f"- wall time per step, no profiler: **{step_ms:.1f} ms** ({args.batch * 1000 / step_ms:.1f} tok/s)"
        + ("" if python_ms is None else ", the compiled step (`fused_decode`)"),
        *([] if python_ms is None else [
            f"- the Python step, timed right after over the same positions: {python_ms:.1f} ms "
            f"({args.batch * 1000 / python_ms:.1f} tok/s); compiled ÷ Python speed: **{python_ms / step_ms:.2f}x**"
        ]),
        f"- profiled: {total_us / args.steps / 1000:.1f} ms of operator self time and {calls:.0f} operator calls per step",
        "",
        "| operator | calls per step | ms per step | share of operator time |",
        "|---|---:|---:|---:|",
        *(f"| `{r['operator']}` | {r['calls_per_step']:.0f} | {r['ms_per_step']:.2f} | {r['share']:.1%} |" for r in rows),
    ]
    path = results.write("Decode step profile", "\n".join(lines), {
        "quantization": args.quantization, "dtype": args.dtype, "batch": args.batch, "steps": args.steps,
        "step_ms": step_ms, "python_step_ms": python_ms, "operator_ms_per_step": total_us / args.steps / 1000, "calls_per_step": calls,
        "top": rows,
    })
    print(path.read_text())


if __name__ == "__main__":
    main()
