"""Next-token choice for a batch of rows, each with its own settings and random stream.

Every sequence owns a `random.Random` seeded from `(seed, sample index)` and
draws exactly one number per sampled token, so sample `i` of a seeded request
is the same whether it is decoded alone, beside fifteen siblings, or beside
rows of other requests that join and leave the batch: the batch never shares
randomness between rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens and when it stops."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    hidden_states: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def sample_stream(seed: int, index: int) -> random.Random:
    """The random stream of sample `index` of a request seeded with `seed`."""
    return random.Random(f"{seed}:{index}")


def choose_tokens(
    logits: torch.Tensor, params: list[SamplingParams], streams: list[random.Random]
) -> tuple[list[int], list[float]]:
    """One token per row of `logits` ([rows, vocab], float32) and its log-probability.

    The log-probability is under the model's own (untempered) distribution, so
    scorers that read it compare samples drawn at different temperatures fairly.
    """
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logits.argmax(dim=-1)
    sampled_rows = [row for row, p in enumerate(params) if p.temperature > 0]
    if sampled_rows:
        index = torch.tensor(sampled_rows, device=logits.device)
        rows = [params[r] for r in sampled_rows]
        temperatures = torch.tensor([p.temperature for p in rows], device=logits.device)
        scaled = logits[index] / temperatures[:, None]
        if any(p.top_k > 0 or p.top_p < 1.0 for p in rows):
            scaled = _truncate(scaled, rows)
        probs = torch.softmax(scaled, dim=-1)
        cdf = probs.cumsum(dim=-1)
        draws = torch.tensor([streams[r].random() for r in sampled_rows], device=logits.device, dtype=cdf.dtype)
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).squeeze(1)
        chosen[index] = picked.clamp(max=logits.shape[-1] - 1)
    chosen_logprobs = raw_logprobs.gather(1, chosen[:, None]).squeeze(1)
    return chosen.tolist(), chosen_logprobs.tolist()


def _truncate(scaled: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Top-k then top-p (nucleus) masking, vectorised over rows with per-row settings."""
    vocab = scaled.shape[-1]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=scaled.device)[None, :]
    top_k = torch.tensor([p.top_k or vocab for p in params], device=scaled.device)
    sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = torch.softmax(sorted_logits, dim=-1)
    better_mass = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    top_p = torch.tensor([p.top_p for p in params], device=scaled.device, dtype=probs.dtype)
    sorted_logits = sorted_logits.masked_fill(better_mass >= top_p[:, None], float("-inf"))
    return torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
