"""What constrained decoding costs per token: xgrammar against llguidance, and the engine with and without it.

1. The grammar work alone, per library: for a fixed JSON reply's tokens, compute
   the allowed-token mask, apply it to a vocabulary-sized logits row and advance
   the matcher, token by token (microseconds per token, the best of `--rounds`).
   This is how the engine's library was picked.
2. The local engine on the default model (float32, greedy, batch 1): decode
   tokens/s unconstrained, and under a JSON schema (response_format), timed in
   alternating rounds. Unconstrained runs generate exactly `--tokens` tokens (EOS
   suppressed); constrained runs generate what the schema lets the model write,
   so per-token speeds, not run times, are compared.

    .venv/bin/python bench/constrained_decoding.py [--tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import ResultsFile  # noqa: E402

from orchestra.backends import GenerationRequest, ModelSpec  # noqa: E402
from orchestra.backends.local import LocalBackend  # noqa: E402
from orchestra.backends.local_engine import SamplingParams  # noqa: E402
from orchestra.problem import Message  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["title", "year", "tags", "summary"],
    "additionalProperties": False,
}
REPLY = {
    "title": "The Analytical Engine",
    "year": 1843,
    "tags": ["mathematics", "computing", "history", "notes"],
    "summary": "Ada Lovelace's notes describe a machine that manipulates symbols, not only numbers.",
}
PROMPT = "Describe a famous historical document as JSON with a title, a year, tags and a long summary."


def _grammar_costs(tokenizer, vocab: int, eos: int, rounds: int) -> dict[str, float]:
    """Microseconds per token of mask + apply + advance, per library (and of the row copy alone)."""
    import llguidance
    import llguidance.hf
    import llguidance.torch as llg_torch
    import xgrammar

    ids = tokenizer(json.dumps(REPLY, separators=(",", ":")), add_special_tokens=False)["input_ids"] + [eos]
    logits = torch.randn(1, vocab)

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=[eos])
    compiled = xgrammar.GrammarCompiler(info).compile_json_schema(SCHEMA, any_whitespace=False, separators=(",", ":"))

    def with_xgrammar() -> None:
        matcher, bitmask = xgrammar.GrammarMatcher(compiled), xgrammar.allocate_token_bitmask(1, vocab)
        for token in ids:
            matcher.fill_next_token_bitmask(bitmask)
            row = logits.clone()
            xgrammar.apply_token_bitmask_inplace(row, bitmask)
            assert row[0, token] > float("-inf") and matcher.accept_token(token)

    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults={"whitespace_flexible": False})

    def with_llguidance() -> None:
        matcher, bitmask = llguidance.LLMatcher(ll_tokenizer, grammar), llg_torch.allocate_token_bitmask(1, vocab)
        for token in ids:
            llg_torch.fill_next_token_bitmask(matcher, bitmask, 0)
            row = logits.clone()
            llg_torch.apply_token_bitmask_inplace(row, bitmask)
            assert row[0, token] > float("-inf") and matcher.consume_token(token), matcher.get_error()

    def copy_only() -> None:
        for _ in ids:
            logits.clone()

    costs = {}
    for name, run in (("row copy only", copy_only), ("xgrammar", with_xgrammar), ("llguidance", with_llguidance)):
        run()  # warm-up
        best = float("inf")
        for _ in range(rounds):
            began = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - began)
        costs[name] = best / len(ids) * 1e6
    return costs


def _decode_speeds(backend: LocalBackend, tokens: int, rounds: int) -> dict[str, dict[str, float]]:
    prompt = backend.prepare(GenerationRequest(messages=(Message(role="user", content=PROMPT),))).token_ids
    plain = SamplingParams(max_tokens=tokens, min_tokens=tokens)
    constrained = SamplingParams(max_tokens=tokens, json_schema=json.dumps(SCHEMA))
    totals = {"unconstrained": [0, 0.0], "json_schema (xgrammar)": [0, 0.0]}
    for name, params in (("unconstrained", plain), ("json_schema (xgrammar)", constrained)):
        backend.engine.generate(prompt, params, seed=0)  # warm-up, and the grammar compiled
    for _ in range(rounds):
        for name, params in (("unconstrained", plain), ("json_schema (xgrammar)", constrained)):
            backend.clear_prefix_cache()
            began = time.perf_counter()
            (done,) = backend.engine.generate(prompt, params, seed=0)
            totals[name][0] += len(done.token_ids)
            totals[name][1] += time.perf_counter() - began
    return {name: {"tokens": n, "seconds": s, "tokens_per_second": n / s} for name, (n, s) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = ResultsFile("constrained_decoding")
    backend = LocalBackend(ModelSpec(backend="local", model="smollm2-135m-instruct", dtype="float32"))
    vocab = backend.model.get_output_embeddings().weight.shape[0]
    grammar = _grammar_costs(backend.tokenizer, vocab, backend.tokenizer.eos_token_id, args.rounds)
    decode = _decode_speeds(backend, args.tokens, args.rounds)
    base = decode["unconstrained"]["tokens_per_second"]
    lines = [
        "## Grammar work per token (mask + apply to a logits row + advance; best of rounds)",
        "",
        "| | µs / token |",
        "|---|---:|",
        *[f"| {name} | {cost:.0f} |" for name, cost in grammar.items()],
        "",
        f"## Engine decode, SmolLM2-135M float32, greedy, batch 1 ({args.rounds} alternating rounds)",
        "",
        "| | tokens | tokens/s | vs unconstrained |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {d['tokens']} | {d['tokens_per_second']:.1f} | {d['tokens_per_second'] / base:.2f}x |"
          for name, d in decode.items()],
    ]
    markdown = "\n".join(lines)
    print(markdown)
    path = results.write("Constrained decoding overhead", markdown, {"args": vars(args), "grammar_us_per_token": grammar, "decode": decode})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
