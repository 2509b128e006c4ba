"""Lossless speculative sampling: keep a drafted token with probability min(1, p/q).

A draft token x drawn from the draft distribution q is accepted with probability
min(1, p(x)/q(x)), where p is the target's distribution at the same position. On
rejection the replacement is drawn from the residual max(p - q, 0), renormalised.
The token that comes out is then distributed exactly as p, whatever q is
(Leviathan et al. 2023; Chen et al. 2023), and a draft survives with probability
sum_x min(p(x), q(x)) = 1 - TV(p, q).

Everything here is vectorised over rows and takes its randomness as explicit
uniforms, so a seeded stream drives it (one engine sequence), and so does a test
that runs 100k independent trials in one call.
"""

from __future__ import annotations

import torch


def processed_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution a sampler draws from: softmax(logits / T), cut to top-k and the top-p nucleus.

    Both the target and the draft are put through the same transform, so the
    speculative output follows the distribution plain sampling uses.
    """
    if temperature <= 0:
        raise ValueError("processed_probs is for sampling (temperature > 0)")
    scaled = logits.float() / temperature
    vocab = scaled.shape[-1]
    if top_k and top_k < vocab:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        ordered, order = probs.sort(dim=-1, descending=True)
        better_mass = ordered.cumsum(dim=-1) - ordered
        ordered = ordered.masked_fill(better_mass >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One index per row of `probs` (unnormalised is fine), picked with that row's uniform in [0, 1)."""
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniforms.to(cdf.dtype) * cdf[:, -1])[:, None], right=True).squeeze(1)
    return picked.clamp(max=probs.shape[-1] - 1)


def verify_rows(
    target: torch.Tensor,
    draft: torch.Tensor,
    drafted: torch.Tensor,
    accept_uniforms: torch.Tensor,
    residual_uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row: is the drafted token kept, and the residual token that replaces it if not.

    target, draft: `[rows, vocab]` probabilities p and q; drafted: `[rows]` tokens drawn from q;
    uniforms: `[rows]` in [0, 1). Returns (accepted `[rows]` bool, replacement `[rows]` long).
    On a GPU the Triton kernel does the same without building the residual tensor.
    """
    if target.is_cuda:
        from orchestra.kernels import triton_rejection_sampling

        if triton_rejection_sampling.available():
            return triton_rejection_sampling.verify_rows_triton(target, draft, drafted, accept_uniforms, residual_uniforms)
    rows = torch.arange(target.shape[0], device=target.device)
    p_x, q_x = target[rows, drafted], draft[rows, drafted]
    # u < p/q written as u * q < p: no division, and q(x) = 0 (never drafted) cannot blow up.
    accepted = accept_uniforms.to(target.dtype) * q_x < p_x
    residual = (target - draft).clamp(min=0)
    # p == q leaves no residual; the replacement is then never needed, but keep it well defined.
    empty = residual.sum(dim=-1, keepdim=True) <= 0
    residual = torch.where(empty, target, residual)
    return accepted, inverse_cdf(residual, residual_uniforms)


def speculative_chain(
    target: torch.Tensor,
    draft: torch.Tensor,
    drafted: torch.Tensor,
    accept_uniforms: torch.Tensor,
    residual_uniforms: torch.Tensor,
) -> tuple[int, list[int]]:
    """Verify a drafted chain of k tokens against k + 1 target rows.

    target: `[k + 1, vocab]` (row i: the distribution after the root and i drafts);
    draft: `[k, vocab]`; drafted: `[k]`; accept_uniforms: `[k]`; residual_uniforms: `[k + 1]`
    (the last one samples the bonus token when every draft is kept).
    Returns (drafts accepted, the emitted tokens: the accepted drafts and one more).
    """
    k = drafted.shape[0]
    if k:
        accepted, replacement = verify_rows(target[:k], draft, drafted, accept_uniforms[:k], residual_uniforms[:k])
        rejected = (~accepted).nonzero()
        kept = int(rejected[0]) if rejected.numel() else k
    else:
        kept = 0
    emitted = drafted[:kept].tolist()
    if kept < k:
        emitted.append(int(replacement[kept]))
    else:
        emitted.append(int(inverse_cdf(target[k : k + 1], residual_uniforms[k : k + 1])[0]))
    return kept, emitted
