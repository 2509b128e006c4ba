"""Issue 16's GPU check: is the local engine right on a GPU, and how fast is it — in one run.

A session that is lent a GPU runs `scripts/gpu_check.sh` (this script, under a
time limit) once; every section writes what it found, and a failing section
does not stop the others:

1. graph sharing — the layer-skip draft decodes first (it captures its own
   graphs), then the target decodes at the same buckets: its tokens and
   log-probabilities must equal the eager engine's (within bf16 tolerance);
2. long contexts — a 1,400-token prompt, and a sequence that grows past the
   static KV pool, on the graph engine: they must run (on the eager fallback)
   and give the eager engine's tokens;
3. speculative decoding — prompt lookup, Token Recycling and the layer-skip
   draft: how many prompts give plain greedy's tokens exactly, and the speedup
   over plain decoding with graphs, batch 1;
4. throughput — batch-1 greedy and best-of-16 sampled tokens/s of the engine
   with graphs, the engine eager and HF `generate` (batched), the same token count each;
5. the eager step — ms per decode step, engine eager against HF `generate`, and
   the engine's host reads and uploads per step (`eager_step.py`).

`--dry-run` runs every section on the CPU over a tiny random Llama and a byte
tokenizer, with the static-shape path standing in for graphs — the tests run it
that way, so the script is known to work before a GPU ever sees it.

    .venv/bin/python bench/gpu_check.py --out "$OUT"     # on a GPU, bf16, about 3-5 minutes
    .venv/bin/python bench/gpu_check.py --dry-run --out /tmp/check

Results: gpu_check-*.md and .json under --out (`results_file.py`); the exit status
is 1 when a correctness check failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams
from orchestra.backends.local_engine.options import SpeculativeOptions

from eager_step import measure
from results_file import RESULTS, ResultsFile

PASSAGE = (
    "The lighthouse on Gull Rock was built in 1871. Its lamp burned whale oil until 1902, "
    "then kerosene, and was electrified in 1938. The last keeper, Ada Finch, left in 1961. "
)
QUESTIONS = [
    f"Repeat this text exactly: {PASSAGE}",
    f"{PASSAGE}\nWhen was the lamp electrified? Answer with a sentence from the text.",
    "Count from 1 to 30, separated by commas.",
    "Write a haiku about the sea.",
    "Explain what a prime number is in two sentences.",
    "Give me three tips for sleeping well.",
]


def _speculative_options(draft_layers: int) -> dict[str, SpeculativeOptions]:
    return {
        "prompt_lookup": SpeculativeOptions(method="prompt_lookup", draft_tokens=8),
        "token_recycling": SpeculativeOptions(method="token_recycling"),
        "layer_skip": SpeculativeOptions(method="draft_model", draft="layer_skip",
                                         draft_options={"layers": draft_layers}),
    }


@dataclass
class Setup:
    """What the sections run on: the model, how to encode prompts, the engines' settings."""

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: str
    graphs: EngineConfig  # the CUDA-graph engine (static shapes on a CPU dry run)
    eager: EngineConfig
    tokens: int
    long_prompt_tokens: int
    draft_layers: int
    logprob_tolerance: float
    weights: str
    failures: list[str] = field(default_factory=list)

    def encode(self, text: str) -> list[int]:
        chat = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(chat, add_special_tokens=False)["input_ids"]

    def engine(self, config: EngineConfig, speculative: SpeculativeOptions | None = None) -> InferenceEngine:
        return InferenceEngine(self.model, self.tokenizer, config, speculative=speculative)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok


# ----- the sections -------------------------------------------------------------------------------


def graph_sharing(setup: Setup) -> dict:
    """Draft first, then the target at the same buckets: tokens and log-probabilities against eager."""
    ids = setup.encode(QUESTIONS[0])
    greedy = SamplingParams(max_tokens=setup.tokens, logprobs=True)
    eager = setup.engine(setup.eager)
    expected = eager.generate(ids, greedy)[0]
    eager.close()
    engine = setup.engine(setup.graphs, _speculative_options(setup.draft_layers)["layer_skip"])
    speculated = engine.generate(ids, greedy)[0]
    pair = engine.generate(ids, greedy, n=2)  # the target's plain batched decode
    alone = engine.generate(ids, SamplingParams(max_tokens=setup.tokens, logprobs=True, top_logprobs=1))[0]
    engine.close()
    found = {"speculated_equals_eager": speculated.token_ids == expected.token_ids}
    for name, result in (("batch_2", pair[0]), ("batch_1_after_draft", alone)):
        same = _common_prefix(result.token_ids, expected.token_ids)
        difference = max((abs(a - b) for a, b in zip(result.logprobs[:same], expected.logprobs[:same])), default=0.0)
        found[name] = {"identical_tokens": same == len(expected.token_ids), "common_prefix": same,
                       "max_logprob_difference": difference}
        setup.check(difference <= setup.logprob_tolerance,
                    f"graph sharing: {name} log-probabilities differ from eager by {difference:.3g}")
    return found


def long_contexts(setup: Setup) -> dict:
    """A prompt longer than the static pool, and a sequence that grows past it, on the graph engine."""
    engine = setup.engine(setup.graphs)
    static_length = engine.runner.pool_shape[1] if hasattr(engine.runner, "pool_shape") else None
    text = PASSAGE * (setup.long_prompt_tokens // 40 + 2)
    long_ids = setup.encode(f"Summarise: {text}")[-setup.long_prompt_tokens:]
    cases = {"long_prompt": long_ids}
    if static_length:
        cases["grows_past_pool"] = long_ids[-(static_length - setup.tokens // 2):]
    params = SamplingParams(max_tokens=setup.tokens, min_tokens=setup.tokens)
    eager = setup.engine(setup.eager)
    found: dict[str, Any] = {"static_pool": engine.runner.pool_shape if static_length else None}
    for name, ids in cases.items():
        try:
            got = engine.generate(ids, params)[0].token_ids
        except Exception as error:  # the point of the check: it must not fail
            setup.check(False, f"long contexts: {name} ({len(ids)} tokens) failed: {error!r}")
            found[name] = {"prompt_tokens": len(ids), "error": repr(error)}
            continue
        want = eager.generate(ids, params)[0].token_ids
        same = _common_prefix(got, want)
        found[name] = {"prompt_tokens": len(ids), "identical_tokens": same == len(want), "common_prefix": same}
        setup.check(same == len(want), f"long contexts: {name} differs from eager after {same} tokens")
    engine.close()
    eager.close()
    return found


def speculative(setup: Setup) -> dict:
    """Identity with plain greedy, and speed against plain graph decoding, batch 1."""
    prompts = [setup.encode(q) for q in QUESTIONS]
    params = SamplingParams(max_tokens=setup.tokens)
    plain = setup.engine(setup.graphs)
    plain.generate(prompts[0], SamplingParams(max_tokens=8))  # warm-up
    began = time.perf_counter()
    expected = [plain.generate(ids, params)[0].token_ids for ids in prompts]
    plain_seconds = time.perf_counter() - began
    plain.close()
    plain_tokens = sum(len(t) for t in expected)
    found: dict[str, Any] = {"plain_tokens_per_s": plain_tokens / plain_seconds}
    for name, options in _speculative_options(setup.draft_layers).items():
        engine = setup.engine(setup.graphs, options)
        engine.generate(prompts[0], SamplingParams(max_tokens=8))
        began = time.perf_counter()
        got = [engine.generate(ids, params)[0].token_ids for ids in prompts]
        seconds = time.perf_counter() - began
        stats = engine.speculative.stats
        engine.close()
        found[name] = {
            "identical_prompts": sum(a == b for a, b in zip(got, expected)),
            "prompts": len(prompts),
            "speedup_over_plain_graphs": (sum(len(t) for t in got) / seconds) / found["plain_tokens_per_s"],
            "mean_accepted_length": stats.mean_accepted_length,
        }
    return found


def throughput(setup: Setup, samples: int = 16) -> dict:
    """Batch-1 greedy and best-of-N sampled tokens/s: engine with graphs, engine eager, HF generate."""
    ids = setup.encode(QUESTIONS[4])
    tokens = setup.tokens
    greedy = SamplingParams(max_tokens=tokens, min_tokens=tokens)
    sampled = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.7, top_p=0.95)
    found: dict[str, dict[str, float]] = {"batch-1 greedy": {}, f"best-of-{samples}": {}}
    for label, config in (("engine + graphs", setup.graphs), ("engine eager", setup.eager)):
        engine = setup.engine(config)
        engine.generate(ids, SamplingParams(max_tokens=8))
        engine.generate(ids, SamplingParams(max_tokens=8, temperature=0.7), n=samples, seed=1)  # warm-up (capture)
        found["batch-1 greedy"][label] = _tokens_per_second(lambda: engine.generate(ids, greedy), tokens, setup.device)
        found[f"best-of-{samples}"][label] = _tokens_per_second(
            lambda: engine.generate(ids, sampled, n=samples, seed=0), tokens * samples, setup.device)
        engine.close()
    hf_ids = torch.tensor([ids], device=setup.device)
    pad = setup.tokenizer.pad_token_id if setup.tokenizer.pad_token_id is not None else setup.tokenizer.eos_token_id

    def hf(n: int, **settings) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                setup.model.generate(hf_ids, attention_mask=torch.ones_like(hf_ids), max_new_tokens=tokens,
                                     min_new_tokens=tokens, num_return_sequences=n, pad_token_id=pad, **settings)
        return run

    hf(1, do_sample=False)()  # warm-up
    found["batch-1 greedy"]["HF generate"] = _tokens_per_second(hf(1, do_sample=False), tokens, setup.device)
    found[f"best-of-{samples}"]["HF generate (batched)"] = _tokens_per_second(
        hf(samples, do_sample=True, temperature=0.7, top_p=0.95, top_k=0), tokens * samples, setup.device)
    return found


def eager_step(setup: Setup) -> dict:
    """ms per decode step (engine eager against HF generate, batch 1) and the engine's host work per step."""
    found = measure(setup.model, setup.tokenizer, setup.device, tokens=min(setup.tokens, 24), rounds=2)
    return {key: found[key] for key in ("ms_per_step", "ratio_engine_over_hf", "host_work_per_decode_step")}


SECTIONS: dict[str, Callable[[Setup], dict]] = {
    "graph_sharing": graph_sharing,
    "long_contexts": long_contexts,
    "speculative": speculative,
    "throughput": throughput,
    "eager_step": eager_step,
}


# ----- set-up and report ----------------------------------------------------------------------------


def _common_prefix(a, b) -> int:
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    return same


def _tokens_per_second(run: Callable[[], object], tokens: int, device: torch.device) -> float:
    began = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - began)


class _ByteTokenizer:
    """A dry run's tokenizer: one token per byte (mod 120), a chat template that just joins the turns."""

    eos_token_id = 127
    pad_token_id = 0

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        return "\n".join(m["content"] for m in messages) + "\n"

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [1 + byte % 120 for byte in text.encode()]}

    def decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return bytes(int(t) % 128 for t in tokens).decode(errors="replace")


def dry_run_setup() -> Setup:
    """The CPU stand-in: a tiny random Llama (float32), static shapes in place of CUDA graphs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=127, bos_token_id=0, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    per_token = 3 * 2 * 2 * 16 * 4
    return Setup(
        model=model, tokenizer=_ByteTokenizer(), device=torch.device("cpu"), dtype="float32",
        # A 16 x 256 static pool, so the long-context cases leave it.
        graphs=EngineConfig(static_shapes=True, max_batch_size=16, kv_cache_bytes=16 * 256 * per_token),
        eager=EngineConfig(cuda_graphs=False), tokens=12, long_prompt_tokens=400, draft_layers=1,
        logprob_tolerance=1e-4, weights="a tiny random Llama (dry run)",
    )


def gpu_setup(dtype: str, tokens: int, model_folder: Path | None) -> Setup:
    """The default model on the GPU; or the model in `model_folder` — random weights of its shape
    when the folder holds only its config and tokenizer (`scripts/gpu_check.sh prepare` writes
    those: the default model's 94 MiB file does not fit a device call's 64 MiB)."""
    import transformers

    from orchestra.models import load_pretrained

    if model_folder is None:
        model, tokenizer = load_pretrained("smollm2-135m-instruct", dtype)
        weights = "smollm2-135m-instruct"
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_folder)
        if any(model_folder.glob("*.safetensors")):
            model = transformers.AutoModelForCausalLM.from_pretrained(model_folder, dtype=getattr(torch, dtype))
            weights = str(model_folder)
        else:
            torch.manual_seed(0)
            config = transformers.AutoConfig.from_pretrained(model_folder)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
            weights = f"random weights in the shape of {model_folder}"
    model.to("cuda").eval()
    return Setup(
        model=model, tokenizer=tokenizer, device=torch.device("cuda"), dtype=dtype,
        graphs=EngineConfig(), eager=EngineConfig(cuda_graphs=False), tokens=tokens,
        long_prompt_tokens=1400, draft_layers=max(1, model.config.num_hidden_layers // 3),
        # The wrong replays were off by up to 1.04; bf16 rounding moves a log-probability by far less.
        logprob_tolerance=0.15 if dtype == "bfloat16" else 1e-3, weights=weights,
    )


def report(setup: Setup, found: dict[str, Any], seconds: dict[str, float]) -> str:
    lines = [f"Model: {setup.weights}; {setup.dtype} on {setup.device}"
             f" ({torch.cuda.get_device_name() if setup.device.type == 'cuda' else 'CPU'}); "
             f"{setup.tokens} new tokens per sample.", ""]
    lines.append(f"**Correctness: {'all checks passed' if not setup.failures else 'FAILED'}**")
    lines += [f"- {failure}" for failure in setup.failures]
    for name, result in found.items():
        lines += ["", f"## {name} ({seconds[name]:.0f} s)", ""]
        if name == "throughput" and "error" not in result:
            lines += ["| scenario | contender | tok/s |", "|---|---|---:|"]
            lines += [f"| {scenario} | {who} | {rate:,.0f} |" for scenario, row in result.items() for who, rate in row.items()]
        else:
            lines += ["```", _plain_text(result), "```"]
    return "\n".join(lines)


def _plain_text(value: Any, indent: str = "") -> str:
    if isinstance(value, dict):
        return "\n".join(f"{indent}{key}: " + (("\n" + _plain_text(v, indent + "  ")) if isinstance(v, dict) else _plain_text(v))
                         for key, v in value.items())
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the CPU stand-in (tiny random model, static shapes)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per sample")
    parser.add_argument("--model", type=Path, help="a model folder (config and tokenizer; weights optional)")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run these sections only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --dry-run runs the same sections on the CPU", file=sys.stderr)
        return 2
    results = ResultsFile("gpu_check", args.out)
    setup = dry_run_setup() if args.dry_run else gpu_setup(args.dtype, args.tokens, args.model)
    found: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in args.only or list(SECTIONS):
        began = time.perf_counter()
        try:
            found[name] = SECTIONS[name](setup)
        except Exception as error:
            setup.failures.append(f"{name}: {error!r}")
            found[name] = {"error": repr(error), "traceback": traceback.format_exc()}
        seconds[name] = time.perf_counter() - began
        print(f"gpu_check: {name} done in {seconds[name]:.0f} s", flush=True)
    path = results.write("GPU check (issue 16)", report(setup, found, seconds),
                         {"dry_run": args.dry_run, "dtype": setup.dtype, "tokens": setup.tokens,
                          "failures": setup.failures, "sections": found, "seconds": seconds})
    print(path.read_text())
    return 1 if setup.failures else 0


if __name__ == "__main__":
    sys.exit(main())
