"""Matrix-vector products that read only the weight columns of nonzero inputs (CPU).

With a sparse input x, `W @ x` needs only the columns W[:, i] where x[i] != 0.
When W is stored column-major — its transpose contiguous, which is how the local
engine keeps float32 weights on a CPU — each such column is one contiguous run
of memory, and the product is a weighted sum of rows of W.T. That is exactly
what `torch.nn.functional.embedding_bag(mode="sum", per_sample_weights=...)`
computes, in one fused, vectorised pass with no gathered copy (gathering with
`index_select` first and multiplying after reads the kept weights twice and
loses to the dense product; measured in bench/sparse.py's notes).

Batch-1 only: with several rows the union of their nonzero inputs quickly
covers every column, and the dense product wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_column_major(weight: torch.Tensor) -> bool:
    """True when weight [out, in] has a contiguous transpose (columns are contiguous)."""
    return weight.dim() == 2 and weight.t().is_contiguous()


def masked_linear(x: torch.Tensor, weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Reference: zero the entries with |x| <= threshold, then the dense product (any batch)."""
    return F.linear(torch.where(x.abs() > threshold, x, torch.zeros((), dtype=x.dtype)), weight)


def gemv_over_columns(values: torch.Tensor, columns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_j values[j] * weight[:, columns[j]] for a column-major weight [out, in]: shape [out]."""
    if not is_column_major(weight):
        raise ValueError("gemv_over_columns needs a column-major weight (weight.t() contiguous)")
    if columns.numel() == 0:  # every input zeroed
        return weight.new_zeros(weight.shape[0])
    return F.embedding_bag(
        columns[None, :], weight.t(), per_sample_weights=values[None, :].to(weight.dtype), mode="sum"
    )[0]


def thresholded_gemv(x: torch.Tensor, weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """`masked_linear` for one vector x [in], reading only the columns of the surviving inputs."""
    columns = (x.abs() > threshold).nonzero().squeeze(1)
    return gemv_over_columns(x[columns], columns, weight)
