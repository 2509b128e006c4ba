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

from orchestra.backends.local_engine.stopping import ConfidenceStop
from orchestra.backends.local_engine.thinking import ThinkingTokens


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens and when it stops."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    #: EOS is not allowed before this many tokens (fixed-length runs, as in benchmarks).
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    #: Report this many most likely tokens (ids, raw log-probabilities) per position.
    top_logprobs: int = 0
    hidden_states: bool = False
    #: Finish early when the sliding-window confidence falls below a threshold (DeepConf).
    confidence_stop: ConfidenceStop | None = None
    #: Bounds on the thinking span (`thinking.ThinkingSpan` replaces tokens when one acts).
    thinking: ThinkingTokens | None = None
    #: A JSON schema (as JSON text) the completion must match: constrained decoding (`constrained`).
    json_schema: str | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def sample_stream(seed: int, index: int) -> random.Random:
    """The random stream of sample `index` of a request seeded with `seed`."""
    return random.Random(f"{seed}:{index}")


#: Top-k / top-p rows are first cut to this many best tokens: a partial top-k is far cheaper
#: than sorting the whole vocabulary, and exact whenever the nucleus fits inside it
#: (rows whose nucleus does not fit fall back to the full sort).
CANDIDATES = 256


def choose_tokens(
    logits: torch.Tensor, params: list[SamplingParams], streams: list[random.Random]
) -> tuple[list[int], list[float]]:
    """One token per row of `logits` ([rows, vocab], float32) and its log-probability.

    The log-probability is under the model's own (untempered) distribution, so
    scorers that read it compare samples drawn at different temperatures fairly.

    Host work: the sampled rows' settings and draws go up in one tensor, and the
    tokens and log-probabilities come back in one read (a truncated row whose
    nucleus might not fit its candidates costs one more read, to decide).
    """
    chosen = logits.argmax(dim=-1)
    sampled_rows = [row for row, p in enumerate(params) if p.temperature > 0]
    if sampled_rows:
        draws = {row: streams[row].random() for row in sampled_rows}  # one per row per step, in row order
        ordered = sorted(sampled_rows, key=lambda row: _truncates(params[row]))  # plain rows first
        settings = torch.tensor(
            [[row, params[row].temperature, draws[row], params[row].top_k, params[row].top_p] for row in ordered],
            dtype=torch.float64, device=logits.device,
        )
        plain = sum(not _truncates(params[row]) for row in sampled_rows)
        if plain:
            _sample_full(logits, settings[:plain], chosen)
        if plain < len(ordered):
            _sample_truncated(logits, settings[plain:], chosen)
    chosen_logprobs = logits.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    # float64 holds every token id exactly: one read brings both back.
    ids, logprobs = torch.stack((chosen.to(torch.float64), chosen_logprobs.to(torch.float64))).tolist()
    return [int(i) for i in ids], logprobs


def _truncates(params: SamplingParams) -> bool:
    return params.top_k > 0 or params.top_p < 1.0


def _scaled(logits: torch.Tensor, settings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The settings' rows of `logits` divided by their temperatures, and those rows' indices."""
    rows = settings[:, 0].long()
    return logits[rows] / settings[:, 1].to(logits.dtype)[:, None], rows


def _draw(scaled: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling of each row's softmax with that row's uniform draw."""
    probs = torch.softmax(scaled, dim=-1)
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniform.to(cdf.dtype) * cdf[:, -1])[:, None]).squeeze(1)
    return picked.clamp(max=scaled.shape[-1] - 1)


def _sample_full(logits: torch.Tensor, settings: torch.Tensor, chosen: torch.Tensor) -> None:
    scaled, rows = _scaled(logits, settings)
    chosen[rows] = _draw(scaled, settings[:, 2])


def _sample_truncated(logits: torch.Tensor, settings: torch.Tensor, chosen: torch.Tensor) -> None:
    scaled, rows = _scaled(logits, settings)
    uniform = settings[:, 2]
    vocab = scaled.shape[-1]
    width = min(CANDIDATES, vocab)
    values, ids = scaled.topk(width, dim=-1)  # sorted, best first
    top_k = settings[:, 3].long()
    top_k = torch.where(top_k > 0, top_k, vocab)
    top_p = settings[:, 4].to(values.dtype)
    # Top-k renormalises over its survivors; without top-k the nucleus is over the whole vocabulary.
    within_k = top_k <= width
    past_k = torch.arange(width, device=scaled.device)[None, :] >= top_k[:, None]
    log_total = torch.where(
        within_k,
        torch.logsumexp(values.masked_fill(past_k, float("-inf")), dim=-1),
        torch.logsumexp(scaled, dim=-1),
    )
    mass = torch.exp(values - log_total[:, None]).masked_fill(past_k, 0.0)
    fits = within_k | (mass.sum(dim=-1) >= top_p)  # the nucleus lies inside the candidates
    picked = ids.gather(1, _draw(_cut(values, mass, top_k, top_p), uniform)[:, None]).squeeze(1)
    if not bool(fits.all()):  # a flat distribution: the nucleus is wider than the candidates, sort everything
        ordered, order = scaled.sort(dim=-1, descending=True)
        beyond_k = torch.arange(vocab, device=scaled.device)[None, :] >= top_k[:, None]
        full_mass = torch.softmax(ordered.masked_fill(beyond_k, float("-inf")), dim=-1)
        widest = order.gather(1, _draw(_cut(ordered, full_mass, top_k, top_p), uniform)[:, None]).squeeze(1)
        picked = torch.where(fits, picked, widest)
    chosen[rows] = picked


def _cut(ordered: torch.Tensor, mass: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) tokens past top-k, and past the nucleus: a token stays while the mass
    of strictly more likely tokens is below top-p. `ordered` is sorted, best first."""
    rank = torch.arange(ordered.shape[-1], device=ordered.device)[None, :]
    better_mass = mass.cumsum(dim=-1) - mass
    drop = (rank >= top_k[:, None]) | (better_mass >= top_p[:, None])
    return ordered.masked_fill(drop, float("-inf"))
