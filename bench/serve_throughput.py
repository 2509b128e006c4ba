"""How much `orchestra serve` sustains, next to the same work run in-process.

    .venv/bin/python bench/serve_throughput.py                       # recipes/quickstart.yaml, 32 clients
    .venv/bin/python bench/serve_throughput.py --recipe recipes/greedy.yaml --requests 64

Both sides run the recipe on the same problems (the task's test prompts) with no
generation cache: first in this process with `orchestra.arun(concurrency=C)`,
then through `orchestra serve` (a subprocess, as a user starts it) with C
concurrent clients (the official `openai` client, one thread each), each sending
its share of the requests one after another. Tokens are the usage the server
reports (every token the recipe spent). Prints requests/s, tokens/s and the
ratio served/in-process; both are measured in this one run, since a shared
machine's speed drifts between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

import orchestra
from orchestra.recipe import load_recipe
from orchestra.server.background import free_port
from orchestra.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
TASK = "reasoning_gym:chain_sum?min_terms=2&max_terms=2&max_digits=1"


def in_process(recipe_path: Path, problems, concurrency: int) -> tuple[float, int, int]:
    """(seconds, total tokens, completion tokens) of arun over the problems."""
    started = time.monotonic()
    result = asyncio.run(orchestra.arun(recipe_path, problems=problems, cache=False, concurrency=concurrency))
    seconds = time.monotonic() - started
    usage = result.summary.usage
    return seconds, usage.total_tokens, usage.completion_tokens


def served(recipe_path: Path, problems, clients: int) -> tuple[float, int, int, float]:
    """(seconds, total tokens, completion tokens, mean request latency) through `orchestra serve`."""
    port = free_port()
    log = open(os.devnull, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "serve", str(recipe_path), "--port", str(port),
         "--concurrency", str(max(clients, 1) * 2), "--max-n", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("orchestra serve did not start")
            time.sleep(0.3)
        name = load_recipe(recipe_path).name
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=3600)
        shares = [problems[i::clients] for i in range(clients)]

        def one_client(share) -> list[tuple[float, int, int]]:
            done = []
            for problem in share:
                sent = time.monotonic()
                reply = client.chat.completions.create(
                    model=name, messages=[m.model_dump() for m in problem.messages]
                )
                done.append((time.monotonic() - sent, reply.usage.total_tokens, reply.usage.completion_tokens))
            return done

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            rows = [row for rows in pool.map(one_client, shares) for row in rows]
        seconds = time.monotonic() - started
        return seconds, sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[0] for r in rows) / len(rows)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/quickstart.yaml")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args()

    problems = load_task(TASK).problems("test", args.requests)
    print(f"{args.recipe.name}: {len(problems)} requests, {args.clients} concurrent clients, task {TASK}")
    local_s, local_tokens, local_completion = in_process(args.recipe, problems, args.clients)
    serve_s, serve_tokens, serve_completion, latency = served(args.recipe, problems, args.clients)
    n = len(problems)
    print(f"{'':<12}{'seconds':>9}{'req/s':>9}{'tok/s':>9}{'compl tok/s':>13}")
    print(f"{'in-process':<12}{local_s:>9.1f}{n / local_s:>9.3f}{local_tokens / local_s:>9.1f}{local_completion / local_s:>13.1f}")
    print(f"{'served':<12}{serve_s:>9.1f}{n / serve_s:>9.3f}{serve_tokens / serve_s:>9.1f}{serve_completion / serve_s:>13.1f}")
    print(f"served / in-process throughput: {local_s / serve_s:.3f}   mean request latency served: {latency:.1f} s")


if __name__ == "__main__":
    main()
