"""How much `orchestra serve` sustains, next to the same work run in-process.

    .venv/bin/python bench/serve_throughput.py                       # recipes/quickstart.yaml, 32 clients
    .venv/bin/python bench/serve_throughput.py --recipe recipes/greedy.yaml --rounds 2

Both sides run the recipe on the same problems (the task's test prompts, one
per client per round) with no generation cache: in this process with
`orchestra.arun(concurrency=clients)`, and through `orchestra serve` (a
subprocess, as a user starts it, model loaded once) with that many concurrent
clients (the official `openai` client, one thread each). Rounds alternate
A B B A, so a shared machine's drifting load hits both sides alike. Tokens are
the usage the server reports (every token the recipe spent). Prints
requests/s, tokens/s and the ratio served / in-process, all from this one run,
and writes them to bench/results/serve_throughput-STAMP.md and .json (date,
machine, load, command; `--out` names another folder).
"""

from __future__ import annotations

import argparse
import asyncio
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
from results_file import RESULTS, ResultsFile

ROOT = Path(__file__).resolve().parent.parent
TASK = "reasoning_gym:chain_sum?min_terms=2&max_terms=2&max_digits=1"


def in_process(recipe_path: Path, problems, concurrency: int) -> tuple[float, int, int]:
    """(seconds, total tokens, completion tokens) of arun over the problems."""
    started = time.monotonic()
    result = asyncio.run(orchestra.arun(recipe_path, problems=problems, cache=False, concurrency=concurrency))
    seconds = time.monotonic() - started
    usage = result.summary.usage
    return seconds, usage.total_tokens, usage.completion_tokens


class Served:
    """`orchestra serve RECIPE` in a subprocess, and clients for it."""

    def __init__(self, recipe_path: Path, clients: int):
        self.clients = clients
        self.name = load_recipe(recipe_path).name
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", "serve", str(recipe_path), "--port", str(port),
             "--concurrency", str(clients * 2), "--max-n", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("orchestra serve did not start")
            time.sleep(0.3)
        self.client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=7200)

    def run(self, problems) -> tuple[float, int, int, float]:
        """(seconds, total tokens, completion tokens, mean request latency)."""
        shares = [problems[i::self.clients] for i in range(self.clients)]

        def one_client(share) -> list[tuple[float, int, int]]:
            done = []
            for problem in share:
                sent = time.monotonic()
                reply = self.client.chat.completions.create(
                    model=self.name, messages=[m.model_dump() for m in problem.messages]
                )
                done.append((time.monotonic() - sent, reply.usage.total_tokens, reply.usage.completion_tokens))
            return done

        started = time.monotonic()
        with ThreadPoolExecutor(self.clients) as pool:
            rows = [row for rows in pool.map(one_client, shares) for row in rows]
        seconds = time.monotonic() - started
        return seconds, sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[0] for r in rows) / len(rows)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/quickstart.yaml")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="Rounds per side (A B B A ...), `clients` requests each.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results files.")
    args = parser.parse_args()

    record = ResultsFile("serve_throughput", args.out)
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    problems = load_task(TASK).problems("test", args.clients * 2 * args.rounds)
    report(f"{args.recipe.name}: {args.clients} concurrent clients, {args.rounds} round(s) of {args.clients} "
           f"requests per side, task {TASK}")
    served = Served(args.recipe, args.clients)
    # Untimed warm-up of both sides: model loading and first-call costs are not throughput.
    warm = load_task(TASK).problems("dev", 1)
    in_process(args.recipe, warm, 1)
    served.run(warm)
    totals = {"in-process": [0.0, 0, 0], "served": [0.0, 0, 0]}
    latencies = []
    try:
        for index in range(2 * args.rounds):
            side = ("in-process", "served", "served", "in-process")[index % 4]
            batch = problems[index * args.clients:(index + 1) * args.clients]
            if side == "served":
                seconds, tokens, completion, latency = served.run(batch)
                latencies.append(latency)
            else:
                seconds, tokens, completion = in_process(args.recipe, batch, args.clients)
            for i, value in enumerate((seconds, tokens, completion)):
                totals[side][i] += value
            report(f"round {index + 1}: {side:<10} {seconds:8.1f} s  {tokens / seconds:7.1f} tok/s")
    finally:
        served.close()
    n = args.clients * args.rounds
    report(f"{'':<12}{'seconds':>9}{'req/s':>9}{'tok/s':>9}{'compl tok/s':>13}")
    for side, (seconds, tokens, completion) in totals.items():
        report(f"{side:<12}{seconds:>9.1f}{n / seconds:>9.3f}{tokens / seconds:>9.1f}{completion / seconds:>13.1f}")
    ratio = totals["in-process"][0] / totals["served"][0]
    latency = sum(latencies) / len(latencies)
    report(f"served / in-process throughput: {ratio:.3f}   mean request latency served: {latency:.1f} s")
    written = record.write(
        f"orchestra serve throughput: {args.recipe.name}",
        "```\n" + "\n".join(lines) + "\n```",
        {"args": {k: str(v) for k, v in vars(args).items()}, "task": TASK, "requests_per_side": n,
         "sides": {side: {"seconds": s, "total_tokens": t, "completion_tokens": c}
                   for side, (s, t, c) in totals.items()},
         "served_over_in_process": ratio, "mean_served_latency_s": latency},
    )
    print(f"written: {written} and .json")


if __name__ == "__main__":
    main()
