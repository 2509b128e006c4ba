"""The local engine's eager decode step at batch 1 against HF `generate` (eager), and its host work.

Issue 16 measured the engine's eager step at 62 ms on a GPU against HF's 20 ms.
A step's cost outside the kernels is host work: reading a value back
(`.item()`, `.tolist()`, `.cpu()`, `int(tensor)`) stalls the host until the
device is done, and building a tensor from a Python list copies host memory to
the device. This script measures both, on whatever device it is given:

- ms per decode step of the engine (no CUDA graphs) and of HF `generate`, the
  same prompt and number of new tokens, greedy, EOS suppressed: each side's
  time for `1 + N` new tokens minus its time for 1 new token, over N, so both
  pay the same prefill and the figure is the decode step alone. The two sides
  alternate, after a warm-up of each, and the median of the rounds is kept;
- the engine's host reads and host-built tensors per decode step
  (`host_work_per_decode_step`, the same count the tests hold the engine to).

    .venv/bin/python bench/eager_step.py                   # CPU, float32 (about a minute)
    .venv/bin/python bench/eager_step.py --device cuda --dtype bfloat16

Results go to bench/results/eager_step-*.md and .json (`results_file.py`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams
from orchestra.backends.local_engine.host_work import count_host_work
from orchestra.models import load_pretrained

from results_file import RESULTS, ResultsFile

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _seconds(run) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def _synchronized(device: torch.device, run):
    def timed():
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return timed


def host_work_per_decode_step(engine: InferenceEngine, ids: list[int], steps: int = 8) -> dict[str, float]:
    """Reads and host-built tensors of `steps` greedy decode steps, less those of the prefill, per step."""
    def generate(new: int):
        return lambda: engine.generate(ids, SamplingParams(max_tokens=new, min_tokens=new))

    prefill_only, with_steps = count_host_work(generate(1)), count_host_work(generate(1 + steps))
    return {kind: (with_steps[kind] - prefill_only[kind]) / steps for kind in with_steps}


def measure(model, tokenizer, device: torch.device, tokens: int, rounds: int) -> dict:
    """Median ms per decode step of the engine (eager) and of HF generate, alternating."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    engine = InferenceEngine(model, tokenizer, EngineConfig(prefix_cache_bytes=0, cuda_graphs=False))
    hf_ids = torch.tensor([ids], device=device)

    def ours(new: int):
        return lambda: engine.generate(ids, SamplingParams(max_tokens=new, min_tokens=new))

    def theirs(new: int):
        def run():
            with torch.inference_mode():
                model.generate(hf_ids, attention_mask=torch.ones_like(hf_ids), max_new_tokens=new,
                               min_new_tokens=new, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return run

    contenders = {"engine (eager)": ours, "HF generate (eager)": theirs}
    for make in contenders.values():  # warm-up, in the timed shapes
        make(1 + tokens)()
        make(1)()
    steps: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        order = list(contenders.items())
        if round_index % 2:
            order.reverse()
        for name, make in order:
            long = _seconds(_synchronized(device, make(1 + tokens)))
            short = _seconds(_synchronized(device, make(1)))
            steps[name].append((long - short) / tokens * 1000)
    work = host_work_per_decode_step(engine, ids)
    engine.close()
    medians = {name: statistics.median(values) for name, values in steps.items()}
    return {
        "ms_per_step": medians,
        "rounds": steps,
        "ratio_engine_over_hf": medians["engine (eager)"] / medians["HF generate (eager)"],
        "host_work_per_decode_step": work,
        "prompt_tokens": len(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tokens", type=int, default=24, help="decode steps timed per generate call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--label", default="", help="a note for the results file (e.g. before/after a change)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = ResultsFile("eager_step", args.out)
    device = torch.device(args.device)
    model, tokenizer = load_pretrained("smollm2-135m-instruct", args.dtype)
    model.to(device)
    found = measure(model, tokenizer, device, args.tokens, args.rounds)
    ms = found["ms_per_step"]
    lines = [
        f"{args.label}".strip(),
        "",
        f"SmolLM2-135M-Instruct, {args.dtype} on {device}, batch 1, greedy, {found['prompt_tokens']}-token prompt, "
        f"{args.tokens} decode steps per call, median of {args.rounds} alternating rounds, torch threads {torch.get_num_threads()}.",
        "",
        "| contender | ms per decode step |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in ms.items()),
        "",
        f"engine / HF: **{found['ratio_engine_over_hf']:.2f}x** the time per step.",
        "",
        "Engine host work per decode step: "
        + ", ".join(f"{kind} {count:.2f}" for kind, count in found["host_work_per_decode_step"].items()),
    ]
    path = results.write("Eager decode step, engine vs HF generate", "\n".join(lines), {"label": args.label, **found,
                         "device": str(device), "dtype": args.dtype, "tokens": args.tokens})
    print(path.read_text())


if __name__ == "__main__":
    main()
