"""Shared pieces of the search tests: a dev/test task of sums and a small space on the fake model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_split_sums(path: Path, dev: int, test: int = 0) -> str:
    """A JSONL task of sums with `dev` problems in the dev split and `test` in the test split."""
    with path.open("w") as handle:
        for i in range(dev + test):
            a, b = i + 2, 2 * i + 1
            split = "dev" if i < dev else "test"
            handle.write(json.dumps({"id": f"p{i}", "prompt": f"Compute {a} + {b} =", "answer": a + b, "split": split}) + "\n")
    return f"jsonl:{path}"


def fake_space(**changes: Any) -> dict[str, Any]:
    """sample (n, temperature) -> optional critic/verify -> a selector, on the fake model.

    With the fake backend, sample k answers correct + OFFSETS[k % 8] = (1, 0, 2, 0, ...):
    n=1 is always wrong and a majority over n=4 or 8 always right, so accuracy depends on n.
    """
    space: dict[str, Any] = {
        "name": "fake_space",
        "models": {"m": {"backend": "fake", "model": "fake-model"}},
        "layers": [
            {"id": "gen", "options": [{"technique": "sample", "params": {
                "n": {"choices": [1, 4, 8]}, "temperature": {"choices": [0.5, 0.8]}, "max_tokens": 32}}]},
            {"id": "check", "optional": True, "options": [
                {"technique": "critic", "params": {"max_tokens": 16}},
                {"technique": "verify", "params": {"max_tokens": 16}},
            ]},
            {"id": "select", "options": [
                {"technique": "majority_vote"},
                {"label": "verified_vote", "technique": "majority_vote", "params": {"weight_by": "verify"}, "requires": ["verify"]},
                {"label": "certainty", "technique": "best_of_n", "params": {"scorer": "mean_logprob"}},
                {"technique": "rank", "params": {"top_k": {"int": [1, 2]}, "max_tokens": 16}},
                {"technique": "fuse", "params": {"max_tokens": 16}},
            ]},
        ],
    }
    space.update(changes)
    return space
