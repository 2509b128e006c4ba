"""The Triton rejection-sampling kernel against its torch reference: compiled on a GPU, interpreted
on a CPU (`triton_device`, tests/triton_device.py). Skipped only where triton cannot be imported (it is
in the `test` extra on Linux x86-64)."""

from __future__ import annotations

import torch

from orchestra.kernels.rejection_sampling import inverse_cdf, verify_rows


def test_rejection_kernel_matches_the_torch_reference(triton_device):
    from orchestra.kernels import triton_rejection_sampling

    generator = torch.Generator().manual_seed(0)
    rows, vocab = 64, 300
    p = torch.softmax(torch.randn(rows, vocab, generator=generator) * 2, dim=-1)
    q = torch.softmax(torch.randn(rows, vocab, generator=generator) * 2, dim=-1)
    q[:4] = p[:4]  # no residual: the kernel falls back to p like the reference
    drafted = inverse_cdf(q, torch.rand(rows, generator=generator))
    accept_u, residual_u = torch.rand(rows, generator=generator), torch.rand(rows, generator=generator)
    accepted, replacement = verify_rows(p, q, drafted, accept_u, residual_u)  # the reference, on the CPU
    on_device = (t.to(triton_device) for t in (p, q, drafted, accept_u, residual_u))
    got_accepted, got_replacement = triton_rejection_sampling.verify_rows_triton(*on_device, block=64)
    assert got_accepted.device.type == triton_device.type
    assert torch.equal(got_accepted.cpu(), accepted)
    # Block-wise prefix sums round differently from torch.cumsum only at a CDF boundary.
    assert float((got_replacement.cpu() == replacement).float().mean()) >= 0.98
    assert bool((got_replacement < vocab).all())
    assert not bool(accepted.all()) and bool(accepted.any())  # both outcomes were checked
