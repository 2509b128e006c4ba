"""Thresholded sparse GEMV as a Triton kernel (GPUs; checked on CPUs under TRITON_INTERPRET=1).

y[b] = W @ where(|x[b]| > t, x[b], 0), reading only the weight rows of W.T (columns
of W) whose input survives: the load of a weight tile is masked by the input's
magnitude test, so a zeroed input costs no weight traffic. Each program owns a
block of outputs for one row of x and walks the input dimension in blocks — the
shape of TEAL's decode kernel, where the threshold test is fused into the GEMV
instead of compacting indices first (no host sync, so it also fits CUDA graphs).

`triton` is optional: `available()` says whether it is installed. The torch
reference is `cpu_sparse_gemv.masked_linear`.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# Imported on first use (see `_kernel`): triton reads TRITON_INTERPRET when it is imported,
# so importing this module must not import triton.
triton = tl = None


def available() -> bool:
    """Whether the triton package is installed (the kernel runs on CUDA, or anywhere with TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def _thresholded_gemv_kernel(  # a Triton kernel body: see _kernel()
    x_ptr,
    w_ptr,
    out_ptr,
    threshold,
    in_features,
    out_features,
    stride_xb,
    stride_wk,
    stride_wn,
    stride_ob,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    block = tl.program_id(0)
    row = tl.program_id(1)
    outputs = block * BLOCK_N + tl.arange(0, BLOCK_N)
    output_ok = outputs < out_features
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for start in range(0, in_features, BLOCK_K):
        inputs = start + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row * stride_xb + inputs, mask=inputs < in_features, other=0.0).to(tl.float32)
        keep = tl.abs(x) > threshold
        tile = tl.load(
            w_ptr + inputs[:, None] * stride_wk + outputs[None, :] * stride_wn,
            mask=keep[:, None] & output_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        total += tl.sum(tile * x[:, None], axis=0)
    tl.store(out_ptr + row * stride_ob + outputs, total.to(out_ptr.dtype.element_ty), mask=output_ok)


_compiled = []


def _kernel():
    """Import triton and jit the kernel on first use, so a process (a test) can still choose
    the interpreter (TRITON_INTERPRET=1) after this module was imported."""
    global triton, tl
    if not _compiled:
        import triton
        import triton.language as tl

        _compiled.append(triton.jit(_thresholded_gemv_kernel))
    return _compiled[0]


def thresholded_linear(x: torch.Tensor, weight: torch.Tensor, threshold: float, block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """`masked_linear(x, weight, threshold)` by the Triton kernel; x [..., in], weight [out, in], any layout."""
    if not available():
        raise RuntimeError("triton is not installed: pip install triton (or use cpu_sparse_gemv.masked_linear)")
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features).contiguous()
    out = torch.empty((rows.shape[0], out_features), dtype=x.dtype, device=x.device)
    grid = ((out_features + block_n - 1) // block_n, rows.shape[0])
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the Triton kernel runs on CUDA tensors, or on CPU tensors with TRITON_INTERPRET=1")
    _kernel()[grid](
        rows,
        weight,
        out,
        float(threshold),
        in_features,
        out_features,
        rows.stride(0),
        weight.stride(1),  # step along the input dimension: W[:, k]
        weight.stride(0),  # step along the output dimension: W[n, :]
        out.stride(0),
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return out.reshape(*x.shape[:-1], out_features)
