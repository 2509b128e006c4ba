"""Benchmark the local inference engine against Hugging Face `generate` and llama.cpp.

Every comparison runs side by side in one process and one run, on the default
model, so the ratios hold even on a busy machine whose absolute speed drifts:

1. best-of-N (default 16 samples x 128 new tokens, one prompt):
   the engine, HF `generate` one sample at a time, HF `generate` batched
   (`num_return_sequences`), llama.cpp's native C++ `llama-server` (one slot per
   concurrent request, continuous batching) and llama-cpp-python's Python server
   (which decodes one request at a time), both on the same GGUF with the same
   thread count and sent N concurrent requests;
2. M concurrent requests with different prompts (default 32), same contenders;
3. batch-1 decode: tokens/s of the engine and of HF, against the memory-bandwidth
   limit (weight bytes read per token / measured read bandwidth), and the
   engine's own overhead (share of a decode step spent outside the forward pass);
4. prefill: prompt tokens/s of one ~580-token prompt, each engine against llama-server;
5. on a GPU: the engine's batch-1 and best-of-N decode with and without CUDA graphs.

The engine runs in its `--dtype` and, beside it, quantized (`--quantizations`,
default int8 and int4 weight-only with float32 activations, and w8a8: int8
weights and activations), and in other precisions (`--also-dtypes`, e.g. `bfloat16/float32`:
bfloat16 decode, float32 prefill), each a contender of its own; "÷ llama.cpp" is a row's tok/s over the native server's
(over llama-cpp-python's server's with `--no-native-server`).

Every contender generates exactly the same number of tokens (EOS is suppressed
until the limit: `min_tokens` / `min_new_tokens` / `ignore_eos`), so tokens/s
compare like with like. Every contender is warmed up in each scenario's shape
before anything is timed, and the timed rounds alternate the contenders' order.
The native server is `.venv/bin/llama-server`, built from the llama.cpp sources
that llama-cpp-python vendors by `make llama-server` (scripts/build-llama-server.sh),
which this script runs when needed. Run:

    .venv/bin/python bench/decode_throughput.py          # the full comparison (several minutes)
    .venv/bin/python bench/decode_throughput.py --quick  # fewer tokens, HF one-at-a-time timed on a subset

The table is printed and written (markdown + JSON) under bench/results/, with the
date, the machine, the load average and exactly which peers ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import transformers

from orchestra.backends.local import LocalBackend
from orchestra.backends.local_engine import SamplingParams
from orchestra.machine import cpu_name
from orchestra.models import resolve
from orchestra.backends import ModelSpec

RESULTS = Path(__file__).resolve().parent / "results"
BEST_OF_PROMPT = (
    "A farmer has 17 sheep. All but 9 run away. Then he buys twice as many as he has left. "
    "How many sheep does he have now? Think step by step."
)


@dataclass
class Row:
    scenario: str
    contender: str
    seconds: float
    tokens: int
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def chat_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- contenders ---------------------------------------------------------------------------


def run_engine(backend: LocalBackend, prompts: list[list[int]], n: int, tokens: int, temperature: float) -> tuple[float, int, dict]:
    engine = backend.engine
    engine.clear_prefix_cache()
    engine.reset_stats()
    params = SamplingParams(temperature=temperature, top_p=0.95 if temperature else 1.0,
                            max_tokens=tokens, min_tokens=tokens)
    began = time.perf_counter()
    futures = [f for ids in prompts for f in engine.submit(ids, params, n=n, seed=0)]
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - began
    stats = engine.stats
    extra = {
        "prefill_s": round(stats.forward_seconds - stats.decode_forward_seconds, 2),
        "prompt_tokens_computed": stats.prompt_tokens_computed,
        "prompt_tokens_reused": stats.prompt_tokens_reused,
        "decode_steps": stats.decode_steps,
        "mean_batch": round(stats.decoded_rows / max(1, stats.decode_steps), 1),
        "overhead_share": round(stats.overhead_share, 4),
    }
    return seconds, sum(len(r.token_ids) for r in results), extra


def run_hf_serial(model, prompts: list[list[int]], n: int, tokens: int, temperature: float, limit: int | None):
    """One `generate` call per sample; with `limit`, time that many and scale to all (they run in sequence)."""
    jobs = [ids for ids in prompts for _ in range(n)]
    timed = jobs if limit is None else jobs[:limit]
    began = time.perf_counter()
    produced = 0
    with torch.inference_mode():
        for ids in timed:
            out = model.generate(torch.tensor([ids], device=model.device), **_hf_settings(tokens, temperature))
            produced += out.shape[1] - len(ids)
    seconds = time.perf_counter() - began
    scale = len(jobs) / len(timed)
    note = "" if scale == 1 else f"timed {len(timed)} of {len(jobs)} calls, scaled"
    return seconds * scale, round(produced * scale), note


def run_hf_batched(model, tokenizer, prompts: list[list[int]], n: int, tokens: int, temperature: float):
    """One `generate` call: the prompts left-padded into one batch, `n` return sequences each."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    began = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n,
                             pad_token_id=pad, **_hf_settings(tokens, temperature))
    seconds = time.perf_counter() - began
    return seconds, (out.shape[1] - width) * out.shape[0]


def _hf_settings(tokens: int, temperature: float) -> dict:
    settings = {"max_new_tokens": tokens, "min_new_tokens": tokens}
    if temperature > 0:
        settings.update(do_sample=True, temperature=temperature, top_p=0.95, top_k=0)
    else:
        settings.update(do_sample=False)
    return settings


class _CompletionServer:
    """An OpenAI-compatible completion server in a subprocess on a free loopback port.

    Subclasses say how to start it (`command`) and how to ask it for exactly
    `tokens` new tokens (`body`); timing, readiness and shutdown are shared."""

    label = ""
    ready_path = "/v1/models"

    def __init__(self, command: list[str], log_path: Path):
        self.command = command
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.label} did not start in {timeout:.0f} s (log: {self.log_path})")

    #: Whether one request may ask for `n` samples of a prompt (the prompt then computed once).
    accepts_n = False

    def body(self, prompt: str, tokens: int, temperature: float, seed: int) -> dict:
        raise NotImplementedError

    def run(self, prompts: list[str], n: int, tokens: int, temperature: float) -> tuple[float, int]:
        """All samples asked for at once (one request per sample, or per prompt with `n` where the
        server takes it); seconds until the last answer, and the completion tokens."""
        import httpx

        async def one(client, prompt: str, seed: int, count: int) -> int:
            body = self.body(prompt, tokens, temperature, seed) | ({"n": count} if count > 1 else {})
            response = await client.post(f"{self.url}/v1/completions", json=body)
            response.raise_for_status()
            answer = response.json()
            if count == 1:
                return answer["usage"]["completion_tokens"]
            # llama-server's usage covers the first choice only; every choice ran to max_tokens (ignore_eos)
            assert len(answer["choices"]) == count and all(c["finish_reason"] == "length" for c in answer["choices"])
            return answer["usage"]["completion_tokens"] * count

        requests = ([(p, 0, n) for p in prompts] if self.accepts_n
                    else [(p, i, 1) for p in prompts for i in range(n)])

        async def everything() -> list[int]:
            limits = httpx.Limits(max_connections=len(requests))
            async with httpx.AsyncClient(timeout=None, limits=limits) as client:
                return await asyncio.gather(*(one(client, *request) for request in requests))

        began = time.perf_counter()
        counts = asyncio.run(everything())
        return time.perf_counter() - began, sum(counts)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class NativeLlamaServer(_CompletionServer):
    """llama.cpp's own C++ `llama-server`: `slots` parallel sequences decoded together (continuous batching).

    Best-of-N is one request with `n` (llama-server computes the prompt once and copies it to the
    other slots, seeding each), as the engine shares a prompt's prefill across its samples. Exactly
    `tokens` tokens: `ignore_eos`. No prompt cache across requests (`cache_prompt: false`), as the
    engine's prefix cache is cleared before each timed run; min-p off, like the other contenders."""

    ready_path = "/health"
    accepts_n = True

    def __init__(self, binary: Path, gguf: Path, threads: int, slots: int, context_per_slot: int, log_path: Path):
        self.port = self._free_port()
        self.flags = ["--threads", str(threads), "--threads-batch", str(threads), "--parallel", str(slots),
                      "--cont-batching", "--ctx-size", str(slots * context_per_slot), "--no-webui"]
        self.binary = binary
        self.label = f"llama.cpp llama-server ({slots} slots, continuous batching)"
        super().__init__([str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
                          *self.flags], log_path)

    def version(self) -> str:
        """`llama-server --version`, and where its llama.cpp library comes from (built in, or a shared one)."""
        done = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=60)
        linked = subprocess.run(["ldd", str(self.binary)], capture_output=True, text=True, timeout=60).stdout
        shared = [line.split("=>")[1].split("(")[0].strip() for line in linked.splitlines()
                  if "libllama.so" in line and "=>" in line]
        library = f"libllama from {shared[0]}" if shared else "llama.cpp linked in statically"
        return f"{' '.join((done.stdout + done.stderr).split())}; {library}"

    def body(self, prompt: str, tokens: int, temperature: float, seed: int) -> dict:
        return {"prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "cache_prompt": False,
                "temperature": temperature, "top_p": 0.95 if temperature else 1.0, "top_k": 0, "min_p": 0.0,
                "seed": seed}


class PythonLlamaServer(_CompletionServer):
    """llama-cpp-python's Python OpenAI server (`python -m llama_cpp.server`): one llama.cpp context
    behind a lock, so it decodes one request at a time whatever the concurrency. Exactly `tokens`
    tokens: `min_tokens`."""

    label = "llama-cpp-python server (one request at a time)"

    def __init__(self, gguf: Path, threads: int, context: int, log_path: Path):
        self.port = self._free_port()
        self.flags = ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(context),
                      "--verbose", "False"]
        super().__init__([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                          "--port", str(self.port), *self.flags], log_path)

    def body(self, prompt: str, tokens: int, temperature: float, seed: int) -> dict:
        return {"prompt": prompt, "max_tokens": tokens, "min_tokens": tokens, "temperature": temperature,
                "top_p": 0.95 if temperature else 1.0, "top_k": 0, "min_p": 0.0, "seed": seed}


def native_server_binary() -> Path:
    """`.venv/bin/llama-server`, built by scripts/build-llama-server.sh (a no-op when already built)."""
    binary = Path(os.path.abspath(sys.executable)).parent / "llama-server"
    script = Path(__file__).resolve().parent.parent / "scripts" / "build-llama-server.sh"
    log("llama-server: scripts/build-llama-server.sh (cached after the first build)")
    subprocess.run(["bash", str(script), sys.executable], check=True)
    return binary


def gguf_description(gguf: Path) -> str:
    """The file's name and its quantisation as the GGUF header states it."""
    import gguf as gguf_format

    field = gguf_format.GGUFReader(gguf).fields["general.file_type"]
    file_type = gguf_format.LlamaFileType(int(field.parts[field.data[0]][0])).name
    return f"{gguf.name} ({file_type}, {gguf.stat().st_size / 2**20:.0f} MiB)"


def read_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s the CPU (all torch threads) reads from memory: a reduction over a large array."""
    data = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    data.sum()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - began)
    return data.numel() * 4 / best


# ----- scenarios ------------------------------------------------------------------------------


Timed = tuple[float, int, str, dict]  # seconds, tokens produced, note, extra facts


def engine_label(backend: LocalBackend) -> str:
    quantization = backend.options.quantization
    dtype = backend.dtype if backend.prefill_dtype == backend.dtype else f"{backend.dtype}, prefill in {backend.prefill_dtype}"
    if quantization == "w8a8":
        return f"orchestra engine ({dtype}, w8a8: int8 weights and activations)"
    return f"orchestra engine ({dtype}{'' if quantization == 'none' else ', ' + quantization + ' weights'})"


def contenders(
    engines: list[LocalBackend],
    servers: list[_CompletionServer],
    prompts: list[list[int]],
    n: int,
    tokens: int,
    temperature: float,
    serial_limit: int | None,
) -> list[tuple[str, Callable[[], Timed]]]:
    """Every contender of a scenario as (label, run): the engines first (the first is the reference of
    the speed-ups)."""
    backend = engines[0]
    texts = [backend.tokenizer.decode(ids) for ids in prompts]

    def engine(which: LocalBackend) -> Callable[[], Timed]:
        def run() -> Timed:
            seconds, produced, extra = run_engine(which, prompts, n, tokens, temperature)
            return seconds, produced, "", extra
        return run

    def hf_serial() -> Timed:
        return *run_hf_serial(backend.model, prompts, n, tokens, temperature, serial_limit), {}

    def hf_batched() -> Timed:
        return *run_hf_batched(backend.model, backend.tokenizer, prompts, n, tokens, temperature), "", {}

    def server_run(server: _CompletionServer) -> Callable[[], Timed]:
        shape = f"{len(texts)} concurrent request(s) of n={n}" if server.accepts_n and n > 1 else f"{len(texts) * n} concurrent requests"
        return lambda: (*server.run(texts, n, tokens, temperature), shape, {})

    return [
        *((engine_label(which), engine(which)) for which in engines),
        ("HF generate, one at a time", hf_serial),
        ("HF generate, batched", hf_batched),
        *((server.label, server_run(server)) for server in servers),
    ]


def warm_up(engines: list[LocalBackend], servers: list[_CompletionServer], prompts: list[list[int]], n: int) -> None:
    """Each contender once, in the scenario's shape but 4 tokens: lazy initialisation, allocator growth,
    thread pools and the servers' slots are paid before anything is timed (not only the engine's)."""
    for label, run in contenders(engines, servers, prompts, n, 4, 0.7, 1):
        log(f"warm-up: {label}")
        run()


def compare(scenario: str, runs: list[tuple[str, Callable[[], Timed]]], rounds: int, first: int) -> list[Row]:
    """`rounds` rounds of every contender, the order reversed every other round (round `first` forward),
    so no contender always runs first or last on a machine whose speed drifts. Each contender's row is
    its fastest round; every round's tok/s and the 1-minute load average before it are kept in `extra`."""
    seen: dict[str, list[tuple[Timed, float]]] = {label: [] for label, _ in runs}
    for round_ in range(rounds):
        order = runs if (round_ + first) % 2 == 0 else runs[::-1]
        for label, run in order:
            load = os.getloadavg()[0]
            log(f"{scenario}: {label} (round {round_ + 1}/{rounds}, load {load:.1f})")
            seen[label].append((run(), load))
    rows = []
    for label, timings in seen.items():
        (seconds, produced, note, extra), load = max(timings, key=lambda t: t[0][1] / t[0][0])
        rounds_tok_s = [round(t[1] / t[0], 1) for t, _ in timings]
        loads = [round(load, 1) for _, load in timings]
        rows.append(Row(scenario, label, seconds, produced, note,
                        extra | {"rounds_tok_s": rounds_tok_s, "load_1min": loads}))
    return rows


def batch_one(backends: list[LocalBackend], prompt: list[int], tokens: int, bandwidth: float) -> tuple[list[Row], dict]:
    """Greedy decode of one sequence, per engine precision, against weight bytes / bandwidth."""
    rows: list[Row] = []
    facts: dict = {"bandwidth_bytes_per_s": round(bandwidth)}
    for backend in backends:
        engine = backend.engine
        engine.reset_stats()
        engine.generate(prompt, SamplingParams(max_tokens=tokens, min_tokens=tokens))
        stats = engine.stats
        step = stats.decode_seconds / stats.decode_steps
        forward = stats.decode_forward_seconds / stats.decode_steps
        weight_bytes = bytes_per_token(backend)
        limit = bandwidth / weight_bytes
        label = engine_label(backend)
        rows.append(Row("batch-1 decode", label, stats.decode_seconds,
                        stats.decode_steps, f"{(1 / step) / limit:.0%} of its bandwidth limit; forward only {1 / forward:.1f} tok/s"))
        rows.append(Row("batch-1 decode", f"memory-bandwidth limit ({label[len('orchestra engine ('):-1]})",
                        weight_bytes / bandwidth, 1,
                        f"{weight_bytes / 2**20:.0f} MiB of weights per token at {bandwidth / 2**30:.1f} GiB/s"))
        facts[label] = {
            "step_ms": round(step * 1e3, 2),
            "forward_ms": round(forward * 1e3, 2),
            "engine_overhead_share": round(1 - forward / step, 4),
            "bandwidth_limit_tokens_per_s": round(limit, 1),
            "share_of_limit": round((1 / step) / limit, 3),
            "weight_bytes": weight_bytes,
        }
    began = time.perf_counter()
    with torch.inference_mode():
        model = backends[0].model
        model.generate(torch.tensor([prompt], device=model.device), **_hf_settings(tokens, 0.0))
    rows.append(Row("batch-1 decode", f"HF generate ({backends[0].dtype})", time.perf_counter() - began, tokens,
                    "includes its prefill"))
    return rows, facts


def bytes_per_token(backend: LocalBackend) -> int:
    """Weight bytes one batch-1 decode step reads: the fused projections and the LM head (quantized
    ones at their packed size) and the norms; of the embedding table, one row (not counted)."""
    runner = backend.engine.runner
    weights = [w for layer in runner.layers for w in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [runner.head]
    norms = [p for name, p in backend.model.named_parameters() if "norm" in name]
    return sum(w.nbytes for w in weights) + sum(p.nbytes for p in norms)


def prefill(engines: list[LocalBackend], servers: list[_CompletionServer], prompt: list[int], rounds: int) -> list[Row]:
    """Prompt tokens/s of one long prompt (and one new token), prefix caches cleared, fastest of `rounds`."""
    rows = []
    text = engines[0].tokenizer.decode(prompt)
    runs: list[tuple[str, Callable[[], float]]] = []
    for backend in engines:
        def run(backend: LocalBackend = backend) -> float:
            backend.engine.clear_prefix_cache()
            began = time.perf_counter()
            backend.engine.generate(prompt, SamplingParams(max_tokens=1))
            return time.perf_counter() - began
        runs.append((engine_label(backend), run))
    # Only the native server: llama-cpp-python's keeps the last prompt's KV whatever the request says,
    # so its repeats are not prefills (a run of 2026-11-29 showed 4106 prompt tok/s).
    for server in (s for s in servers if isinstance(s, NativeLlamaServer)):
        runs.append((server.label, lambda server=server: server.run([text], 1, 1, 0.0)[0]))
    best = {label: float("inf") for label, _ in runs}
    for round_ in range(rounds + 1):  # round 0 warms up
        for label, run in (runs if round_ % 2 == 0 else runs[::-1]):
            seconds = run()
            if round_:
                best[label] = min(best[label], seconds)
    for label, seconds in best.items():
        rows.append(Row(f"prefill, {len(prompt)}-token prompt (+1 new token)", label, seconds, len(prompt),
                        "tok/s = prompt tokens/s"))
    return rows


def gpu_graphs(spec: ModelSpec, prompt: list[int], n: int, tokens: int) -> list[Row]:
    from orchestra.backends.local_engine import EngineConfig

    rows = []
    for graphs in (False, True):
        backend = LocalBackend(spec, EngineConfig(max_batch_size=max(n, 1), cuda_graphs=graphs))
        label = "with CUDA graphs" if graphs else "without CUDA graphs"
        engine = backend.engine
        engine.generate(prompt, SamplingParams(max_tokens=8))  # warm-up (and graph capture)
        engine.generate(prompt, SamplingParams(temperature=0.7, max_tokens=8), n=n, seed=1)
        for width in (1, n):
            engine.reset_stats()
            began = time.perf_counter()
            engine.generate(prompt, SamplingParams(temperature=0.7, max_tokens=tokens, min_tokens=tokens), n=width, seed=0)
            seconds = time.perf_counter() - began
            rows.append(Row(f"GPU, {width} sample(s)", f"engine bf16 {label}", seconds, width * tokens,
                            f"overhead share {engine.stats.overhead_share:.1%}"))
        engine.close()
    return rows


# ----- report -----------------------------------------------------------------------------------


def render(rows: list[Row], facts: dict, header: dict) -> str:
    lines = ["# orchestra engine benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines.append("")
    for scenario in dict.fromkeys(r.scenario for r in rows):
        group = [r for r in rows if r.scenario == scenario]
        engine = group[0]
        peers = [r for prefix in ("llama.cpp llama-server", "llama-cpp-python") for r in group
                 if r.contender.startswith(prefix)]
        native = peers[0] if peers else None  # the native server where it ran, else the Python one
        lines += [f"## {scenario}", ""]
        if native:
            lines += [f"÷ llama.cpp: a row's tok/s over {native.contender}'s", ""]
        lines += ["| contender | seconds | tokens | tok/s | engine speed-up | ÷ llama.cpp | note |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in group:
            ratio = engine.tokens_per_second / row.tokens_per_second if row.tokens_per_second else float("nan")
            versus = f"{row.tokens_per_second / native.tokens_per_second:.2f}x" if native else "—"
            extra = "; ".join(f"{k}={v}" for k, v in row.extra.items())
            note = "; ".join(x for x in (row.note, extra) if x)
            lines.append(f"| {row.contender} | {row.seconds:.2f} | {row.tokens} | {row.tokens_per_second:.1f} "
                         f"| {ratio:.2f}x | {versus} | {note} |")
        lines.append("")
    if facts:
        lines += ["## batch-1 facts", ""] + [f"- {k}: {v}" for k, v in facts.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16, help="n of the best-of-n scenario")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per sample")
    parser.add_argument("--concurrent", type=int, default=32, help="requests in the different-prompts scenario")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and llama.cpp alike (default: torch's default); "
                             "on a machine shared with other jobs, 1 avoids OpenMP threads waiting on each other")
    parser.add_argument("--dtype", default="auto", help="engine dtype: auto (measured), float32, bfloat16")
    parser.add_argument("--quantizations", default="int8,int4,w8a8",
                        help="comma-separated quantizations (int8, int4, w8a8) run as float32 engines of their "
                             "own beside the --dtype engine; empty: none")
    parser.add_argument("--also-dtypes", default="",
                        help="comma-separated engines in other precisions beside the --dtype engine: DTYPE, or "
                             "DTYPE/PREFILL_DTYPE for one that computes prompts in another (e.g. bfloat16/float32)")
    parser.add_argument("--serial-limit", type=int, default=None,
                        help="time only this many HF one-at-a-time calls per scenario and scale (they run in sequence)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed rounds per scenario, the contenders' order reversed every other round")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip both llama.cpp servers")
    parser.add_argument("--no-python-server", action="store_true",
                        help="skip llama-cpp-python's server (one request at a time), keep the native llama-server")
    parser.add_argument("--no-native-server", action="store_true",
                        help="skip the native llama-server (e.g. not built here), keep llama-cpp-python's server")
    parser.add_argument("--llama-server", type=Path, default=None,
                        help="the native llama-server binary (default: .venv/bin/llama-server, built on demand "
                             "by scripts/build-llama-server.sh)")
    parser.add_argument("--quick", action="store_true", help="32 tokens, 8 concurrent prompts, serial limit 4")
    parser.add_argument("--out", type=Path, default=None, help="markdown report path (default bench/results/decode_throughput-TIME.md)")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.concurrent, args.serial_limit = 32, 8, args.serial_limit or 4

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    header = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.node()}: {cpu_name()}, {os.cpu_count()} logical CPUs, "
                   f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    spec = ModelSpec(dtype=args.dtype, max_batch_size=max(64, args.samples, args.concurrent))
    log(f"loading the engine ({args.dtype})")
    backend = LocalBackend(spec)
    others = []
    for kind in filter(None, args.quantizations.split(",")):
        log(f"loading the engine with {kind} weights")
        others.append(LocalBackend(ModelSpec(dtype="float32", quantization=kind, max_batch_size=spec.max_batch_size)))
    for name in filter(None, args.also_dtypes.split(",")):
        dtype, _, prefill_dtype = name.partition("/")
        log(f"loading the engine in {name}")
        others.append(LocalBackend(ModelSpec(dtype=dtype, max_batch_size=spec.max_batch_size,
                                             **({"prefill_dtype": prefill_dtype} if prefill_dtype else {}))))
    engines = [backend, *others]
    tokenizer = backend.tokenizer
    from orchestra.tasks import load_task

    questions = [p.messages[-1].content for p in load_task("reasoning_gym:basic_arithmetic").problems(limit=args.concurrent)]
    best_of = [chat_ids(tokenizer, BEST_OF_PROMPT)]
    different = [chat_ids(tokenizer, q) for q in questions]
    long_questions = [p.messages[-1].content for p in load_task("reasoning_gym:basic_arithmetic").problems(limit=64)]
    long_prompt = chat_ids(tokenizer, "Answer each of these in turn.\n" + "\n".join(long_questions))[:580]

    source = resolve(spec.model)
    gguf = Path(source.path) / (source.gguf_file or "")
    logs = Path(tempfile.mkdtemp(prefix="decode-throughput-"))
    servers: list[_CompletionServer] = []
    header |= {
        "model": spec.model,
        "engine": f"{engine_label(backend)}, on {backend.device}",
        "HF generate": f"transformers {transformers.__version__}, {backend.dtype}, the engine's model object",
        "threads (torch and both llama.cpp servers)": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if not args.no_llama_cpp:
        slots = max(args.samples, args.concurrent)
        longest = max(len(ids) for ids in best_of + different + [long_prompt])
        per_slot = -(-(longest + args.tokens + 64) // 256) * 256
        header["GGUF (both llama.cpp servers)"] = gguf_description(gguf)
        if args.no_native_server:
            header["native peer"] = "skipped (--no-native-server)"
        else:
            native = NativeLlamaServer(args.llama_server or native_server_binary(), gguf, threads, slots, per_slot,
                                       logs / "llama-server.log")
            servers.append(native)
            header["native peer"] = (f"{native.binary} ({native.version()}), flags: {' '.join(native.flags)}; "
                                     "requests: ignore_eos, cache_prompt false, min_p 0")
        try:
            import llama_cpp
        except ImportError:
            header["llama-cpp-python server"] = "skipped: llama-cpp-python[server] is not installed"
        else:
            if not args.no_python_server:
                python_server = PythonLlamaServer(gguf, threads, 4096, logs / "llama-cpp-python-server.log")
                servers.append(python_server)
                header["llama-cpp-python server"] = (f"llama-cpp-python {llama_cpp.__version__}, "
                                                     f"python -m llama_cpp.server {' '.join(python_server.flags)}; "
                                                     "requests: min_tokens, min_p 0")
        for server in servers:
            server.wait_ready()
    header["timing"] = (f"every contender warmed up in each scenario's shape first; {args.rounds} timed round(s) per "
                        "scenario, order reversed every other round; a row is its contender's fastest round")
    rows: list[Row] = []
    facts: dict = {}
    try:
        scenarios = [
            (f"best-of-{args.samples}, {args.tokens} new tokens", best_of, args.samples, 0.7),
            (f"{args.concurrent} concurrent requests, different prompts, {args.tokens} new tokens", different, 1, 0.0),
        ]
        for index, (scenario, prompts, n, temperature) in enumerate(scenarios):
            warm_up(engines, servers, prompts, n)
            runs = contenders(engines, servers, prompts, n, args.tokens, temperature, args.serial_limit)
            rows += compare(scenario, runs, args.rounds, first=index)
        log("batch-1 decode")
        bandwidth = read_bandwidth()
        other = "float32" if backend.dtype == "bfloat16" else "bfloat16"
        second = []  # the other precision, unless --also-dtypes brought it
        if not any(e.dtype == e.prefill_dtype == other and e.options.quantization == "none" for e in others):
            log(f"batch-1 decode: loading a {other} engine beside the {backend.dtype} one")
            second = [LocalBackend(ModelSpec(dtype=other, device=spec.device))]
            second[0].engine.generate(best_of[0], SamplingParams(max_tokens=4))  # warm-up
        one_rows, facts = batch_one([backend, *second, *others], best_of[0], args.tokens, bandwidth)
        rows += one_rows
        for server in servers:
            seconds, produced = server.run([tokenizer.decode(best_of[0])], 1, args.tokens, 0.0)
            rows.append(Row("batch-1 decode", f"{server.label.split(' (')[0]} (Q4_1 GGUF)", seconds, produced,
                            "includes its prefill", {"load_1min": round(os.getloadavg()[0], 1)}))
        log("prefill")
        rows += prefill([backend, *second, *others], servers, long_prompt, args.rounds)
        for engine in second:
            engine.engine.close()
        if torch.cuda.is_available():
            log("GPU: with and without CUDA graphs")
            rows += gpu_graphs(ModelSpec(dtype="bfloat16", device="cuda"), best_of[0], args.samples, args.tokens)
        else:
            header["GPU"] = "none here: the CUDA-graph comparison did not run"
    finally:
        for server in servers:
            server.close()
        for engine in engines:
            engine.engine.close()
    header["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = render(rows, facts, header)
    print(report)
    out = args.out or RESULTS / f"decode_throughput-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    out.with_suffix(".json").write_text(json.dumps(
        {"header": header, "facts": facts, "rows": [asdict(r) | {"tokens_per_second": r.tokens_per_second} for r in rows]},
        indent=2, default=str))
    log(f"written to {out}")


if __name__ == "__main__":
    main()
