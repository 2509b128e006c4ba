"""The Triton rejection-sampling kernel against its torch reference, on CPU under TRITON_INTERPRET=1.

Skipped only where triton cannot be imported (it is in the `test` extra on Linux x86-64).
Triton reads the interpreter switch when it is first imported, and loading a
model imports it (through torch), so when triton is already loaded in this
process each test re-runs itself in a fresh interpreter with the switch on.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

#: Whether this process can still turn the interpreter on (triton not imported yet, or imported with it on).
_INTERPRETED_HERE = "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET") == "1"
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from orchestra.kernels.rejection_sampling import inverse_cdf, verify_rows  # noqa: E402

_FRESH_RUN: list[subprocess.CompletedProcess] = []


def _interpreted(module_name: str, request: pytest.FixtureRequest):
    """The Triton kernel module, interpreted; None when the test ran in a fresh process instead."""
    pytest.importorskip("triton")
    if not _INTERPRETED_HERE:
        if not _FRESH_RUN:  # the whole file once, in one fresh process
            _FRESH_RUN.append(subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
                env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=900,
            ))
        done = _FRESH_RUN[0]
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert f"{request.node.name} PASSED" in done.stdout or " passed" in done.stdout
        return None
    module = sys.modules.get(module_name)
    return importlib.reload(module) if module is not None else importlib.import_module(module_name)


def test_rejection_kernel_matches_the_torch_reference(request):
    kernel = _interpreted("orchestra.kernels.triton_rejection_sampling", request)
    if kernel is None:
        return
    generator = torch.Generator().manual_seed(0)
    rows, vocab = 64, 300
    p = torch.softmax(torch.randn(rows, vocab, generator=generator) * 2, dim=-1)
    q = torch.softmax(torch.randn(rows, vocab, generator=generator) * 2, dim=-1)
    q[:4] = p[:4]  # no residual: the kernel falls back to p like the reference
    drafted = inverse_cdf(q, torch.rand(rows, generator=generator))
    accept_u, residual_u = torch.rand(rows, generator=generator), torch.rand(rows, generator=generator)
    accepted, replacement = verify_rows(p, q, drafted, accept_u, residual_u)
    got_accepted, got_replacement = kernel.verify_rows_triton(p, q, drafted, accept_u, residual_u, block=64)
    assert torch.equal(got_accepted, accepted)
    # Block-wise prefix sums round differently from torch.cumsum only at a CDF boundary.
    assert float((got_replacement == replacement).float().mean()) >= 0.98
    assert bool((got_replacement < vocab).all())
