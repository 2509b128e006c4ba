"""What the `openai` backend costs over calling the server directly.

    .venv/bin/python bench/openai_backend_overhead.py            # llama.cpp serving the default GGUF
    .venv/bin/python bench/openai_backend_overhead.py --requests 32 --max-tokens 32 --concurrency 4

Starts llama.cpp's OpenAI server (llama-cpp-python[server]) on loopback with the
default model's GGUF, then sends the same greedy chat requests (distinct
prompts, seeded) two ways, in alternating rounds so drift hits both alike:

- direct: httpx.AsyncClient posting the JSON body, reading the JSON answer;
- backend: orchestra's OpenAIBackend.generate (request building, endpoint
  pool, retries wrapper, usage parsing, the local tokenizer's pre-call count).

Prints each side's wall time and the ratio backend/direct, measured in one run,
and writes them to bench/results/openai_backend_overhead-STAMP.md and .json
(date, machine, load, command; `--out` names another folder).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orchestra.backends import GenerationRequest
from orchestra.backends.openai_http import OpenAIBackend
from orchestra.models import resolve
from orchestra.problem import Message
from orchestra.backends import ModelSpec
from orchestra.backends import DEFAULT_MODEL
from orchestra.server.background import free_port
from results_file import RESULTS, ResultsFile


def start_llama(threads: int) -> tuple[subprocess.Popen, str]:
    source = resolve(DEFAULT_MODEL)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(source.path) / (source.gguf_file or "")),
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--verbose", "False", "--model_alias", DEFAULT_MODEL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("llama.cpp server did not start")
        time.sleep(0.3)


async def direct(url: str, requests: list[GenerationRequest], concurrency: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(request: GenerationRequest) -> int:
            body = {"model": DEFAULT_MODEL, "messages": [m.model_dump() for m in request.messages or ()],
                    "max_tokens": request.max_tokens, "temperature": 0.0, "seed": request.sample_seed(0)}
            async with gate:
                answer = (await client.post(url + "/chat/completions", json=body)).json()
            return answer["usage"]["completion_tokens"]

        started = time.monotonic()
        tokens = sum(await asyncio.gather(*(one(r) for r in requests)))
        return time.monotonic() - started, tokens


async def through_backend(backend: OpenAIBackend, requests: list[GenerationRequest], concurrency: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(request: GenerationRequest) -> int:
        async with gate:
            backend.count_prompt_tokens(request)  # what the engine does before each call (budget planning)
            result = await backend.generate(request)
        return result.usage.completion_tokens

    started = time.monotonic()
    tokens = sum(await asyncio.gather(*(one(r) for r in requests)))
    return time.monotonic() - started, tokens


def _llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="Each round runs direct and backend, alternating order.")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results files.")
    args = parser.parse_args()

    record = ResultsFile("openai_backend_overhead", args.out)
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    process, url = start_llama(args.threads)
    try:
        spec = ModelSpec(backend="openai", model=DEFAULT_MODEL, openai={"endpoints": [url], "logprobs": False})
        backend = OpenAIBackend(spec)
        totals = {"direct": [0.0, 0], "backend": [0.0, 0]}
        for round_ in range(args.rounds):
            requests = [
                GenerationRequest(
                    messages=(Message(role="user", content=f"What is {round_ * 100 + i} + {i + 3}?"),),
                    max_tokens=args.max_tokens, temperature=0.0, seed=i,
                )
                for i in range(args.requests)
            ]
            order = ("direct", "backend") if round_ % 2 == 0 else ("backend", "direct")
            for side in order:
                if side == "direct":
                    seconds, tokens = asyncio.run(direct(url, requests, args.concurrency))
                else:
                    seconds, tokens = asyncio.run(through_backend(backend, requests, args.concurrency))
                totals[side][0] += seconds
                totals[side][1] += tokens
                report(f"round {round_ + 1} {side:<8} {seconds:7.2f} s  {tokens} completion tokens")
        d, b = totals["direct"], totals["backend"]
        report(f"direct   {d[0]:7.2f} s  {d[1] / d[0]:7.1f} tok/s")
        report(f"backend  {b[0]:7.2f} s  {b[1] / b[0]:7.1f} tok/s")
        report(f"backend / direct wall time: {b[0] / d[0]:.3f}  (same tokens: {b[1] == d[1]})")
        written = record.write(
            "openai backend overhead over calling llama.cpp's server directly",
            f"{args.requests} greedy chat requests of at most {args.max_tokens} tokens, {args.concurrency} in flight, "
            f"{args.rounds} rounds alternating which side goes first; llama.cpp (llama-cpp-python "
            f"{_llama_cpp_version()}) with {args.threads} thread(s) on the default GGUF.\n\n```\n"
            + "\n".join(lines) + "\n```",
            {"args": {k: str(v) for k, v in vars(args).items()},
             "direct": {"seconds": d[0], "completion_tokens": d[1]},
             "backend": {"seconds": b[0], "completion_tokens": b[1]},
             "backend_over_direct": b[0] / d[0]},
        )
        print(f"written: {written} and .json")
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
