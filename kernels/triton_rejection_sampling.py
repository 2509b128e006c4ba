"""Triton version of `rejection_sampling.verify_rows`: one program per row, two passes over the vocabulary.

Pass 1 reads p and q once to get the residual's total mass; pass 2 walks the
running sum of the residual and counts how many prefix sums stay at or below
`u * total` — that count *is* the sampled index (the same rule as
`torch.searchsorted(..., right=True)`), so no early exit or cross-block search
is needed. The GPU then never materialises the `[rows, vocab]` residual that
the torch reference builds.

Runs on CPU tensors under `TRITON_INTERPRET=1` (how CI checks it).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _verify_rows_kernel(
        p_ptr, q_ptr, drafted_ptr, accept_u_ptr, residual_u_ptr, accepted_ptr, replacement_ptr,
        vocab, BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0)
        base = row * vocab
        token = tl.load(drafted_ptr + row)
        p_x = tl.load(p_ptr + base + token)
        q_x = tl.load(q_ptr + base + token)
        accept = tl.load(accept_u_ptr + row) * q_x < p_x
        tl.store(accepted_ptr + row, accept.to(tl.int8))

        residual_total = 0.0
        target_total = 0.0
        for start in range(0, vocab, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            inside = offsets < vocab
            p = tl.load(p_ptr + base + offsets, mask=inside, other=0.0)
            q = tl.load(q_ptr + base + offsets, mask=inside, other=0.0)
            residual_total += tl.sum(tl.maximum(p - q, 0.0), axis=0)
            target_total += tl.sum(p, axis=0)
        use_target = residual_total <= 0.0  # p == q: no residual, fall back to p (never used)
        total = tl.where(use_target, target_total, residual_total)
        threshold = tl.load(residual_u_ptr + row) * total

        running = 0.0
        below = 0
        for start in range(0, vocab, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            inside = offsets < vocab
            p = tl.load(p_ptr + base + offsets, mask=inside, other=0.0)
            q = tl.load(q_ptr + base + offsets, mask=inside, other=0.0)
            mass = tl.where(use_target, p, tl.maximum(p - q, 0.0))
            cdf = running + tl.cumsum(mass, axis=0)
            below += tl.sum(((cdf <= threshold) & inside).to(tl.int32), axis=0)
            running += tl.sum(mass, axis=0)
        tl.store(replacement_ptr + row, tl.minimum(below, vocab - 1).to(tl.int64))


def verify_rows_triton(
    target: torch.Tensor,
    draft: torch.Tensor,
    drafted: torch.Tensor,
    accept_uniforms: torch.Tensor,
    residual_uniforms: torch.Tensor,
    block: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `rejection_sampling.verify_rows` (float32 probabilities)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    rows, vocab = target.shape
    target, draft = target.float().contiguous(), draft.float().contiguous()
    accepted = torch.empty(rows, dtype=torch.int8, device=target.device)
    replacement = torch.empty(rows, dtype=torch.int64, device=target.device)
    _verify_rows_kernel[(rows,)](
        target, draft, drafted.to(torch.int64).contiguous(),
        accept_uniforms.float().contiguous(), residual_uniforms.float().contiguous(),
        accepted, replacement, vocab, BLOCK=block,
    )
    return accepted.bool(), replacement
