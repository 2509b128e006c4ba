"""Which precision each phase of a model runs fastest in on this CPU — measured, not guessed.

bfloat16 halves the bytes read per token, which is what decode is bound by,
but only pays off where the CPU multiplies bf16 natively (AVX512-BF16, AMX);
elsewhere the conversions make it slower than float32 — most of all in
prefill, whose wide products are compute-bound (3.2x slower than float32
on this project's AVX512 CPU without bf16 units, in
bench/results/decode_throughput-20261129-100335.md). The two phases can
disagree, so `dtype: auto` on a CPU times each in both precisions — a few
decode steps at batch 1 and batch 16 (the two regimes the engine runs in, as
the product of their times) and one prefill of a few hundred tokens — and
picks a precision per phase. Where they differ the engine holds the weights
in both (1.5x float32's memory at bf16 decode) and prefills in one, writing
its keys and values into the other's cache. The verdict is remembered per
(model, CPU, torch version, thread count) under orchestra's home, so it costs
a few seconds once per machine. GPUs use bfloat16 without asking.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.machine import cpu_name
from orchestra.paths import home

CANDIDATES = ("float32", "bfloat16")


def _verdicts_file() -> Path:
    return home() / "precision.json"


def machine_key(model_name: str) -> str:
    # "per phase": verdicts from before each phase had its own are measured again
    return f"{model_name}|{cpu_name()}|torch {torch.__version__}|{torch.get_num_threads()} threads|per phase"


def _runner_and_pool(model: torch.nn.Module, rows: int, length: int) -> tuple[LlamaRunner, KVPool]:
    runner = LlamaRunner(model)
    pool = KVPool(
        layers=runner.num_layers,
        kv_heads=runner.kv_heads,
        head_dim=runner.head_dim,
        dtype=runner.dtype,
        device=runner.device,
        byte_limit=1 << 40,
    )
    pool.reserve(rows, length)
    return runner, pool


def time_decode(model: torch.nn.Module, batch: int, context: int = 64, steps: int = 6) -> float:
    """Seconds per decode step of `batch` rows at `context` tokens, after one warm-up step."""
    runner, pool = _runner_and_pool(model, batch, context + steps + 2)
    with torch.inference_mode():
        prompt = tuple(range(10, 10 + context))
        runner.prefill(pool, [PrefillRow(slot, 0, prompt) for slot in range(batch)])
        tokens = torch.full((batch,), 11, dtype=torch.long)
        positions = torch.full((batch,), context, dtype=torch.long)
        runner.decode(pool, tokens, positions)
        began = time.perf_counter()
        for step in range(steps):
            runner.decode(pool, tokens, positions + 1 + step)
        return (time.perf_counter() - began) / steps


def time_prefill(model: torch.nn.Module, tokens: int = 256) -> float:
    """Seconds to prefill one prompt of `tokens` tokens, after one warm-up prefill."""
    runner, pool = _runner_and_pool(model, 1, tokens + 2)
    prompt = tuple(10 + i % 1000 for i in range(tokens))
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(0, 0, prompt[:32])])
        began = time.perf_counter()
        runner.prefill(pool, [PrefillRow(0, 0, prompt)])
        return time.perf_counter() - began


class Verdict(NamedTuple):
    """The precision each phase runs fastest in."""

    decode: str
    prefill: str


def measure(model: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Per candidate precision, each phase's score (lower is faster): "decode", the product
    of the step times at batch 1 and 16 (each regime weighs the same, whatever its scale),
    and "prefill", one prompt's time."""
    scores = {}
    for name in CANDIDATES:
        copy_ = copy.deepcopy(model).to(getattr(torch, name))
        scores[name] = {"decode": time_decode(copy_, 1) * time_decode(copy_, 16), "prefill": time_prefill(copy_)}
        del copy_
    return scores


def fastest_cpu_dtypes(model_name: str, load_model: Callable[[], torch.nn.Module]) -> Verdict:
    """The remembered verdict for this machine, measured now if there is none. The model is
    loaded (`load_model`) only to measure: a remembered verdict costs no weights, so a run the
    cache replays entirely still never loads them."""
    key = machine_key(model_name)
    path = _verdicts_file()
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if key in verdicts:
        return Verdict(verdicts[key]["decode"], verdicts[key]["prefill"])
    scores = measure(load_model())
    verdict = Verdict(*(min(scores, key=lambda name: scores[name][phase]) for phase in Verdict._fields))
    verdicts[key] = {**verdict._asdict(), "scores": scores}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(verdicts, indent=2))
    staging.replace(path)
    return verdict
