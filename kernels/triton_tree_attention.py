"""Triton tree attention: every draft node attends to the prefix and to its own ancestors.

One program per (node, query head): it streams the slot's keys in blocks with an
online softmax (running max and sum), so the `[nodes, prefix + nodes]` mask is
never built — a key is visible when it lies in the committed prefix, or when it
is a node's key and the node's ancestor bit is set. Grouped-query attention
reads the key/value head shared by its query heads.

The torch reference is `scaled_dot_product_attention` with
`draft_tree.verification_mask`; this kernel is checked against it on CPU under
`TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None


if triton is not None:

    @triton.jit
    def _tree_attention_kernel(
        q_ptr, k_ptr, v_ptr, tree_ptr, out_ptr,
        prefix, nodes, group, scale,
        HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
    ):
        node = tl.program_id(0)
        head = tl.program_id(1)
        kv_head = head // group
        keys_total = prefix + nodes
        dims = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + (head * nodes + node) * HEAD_DIM + dims).to(tl.float32)
        best = -float("inf")
        total = 0.0
        acc = tl.zeros((HEAD_DIM,), dtype=tl.float32)
        for start in range(0, keys_total, BLOCK):
            index = start + tl.arange(0, BLOCK)
            inside = index < keys_total
            node_key = index - prefix
            ancestor = tl.load(tree_ptr + node * nodes + node_key, mask=inside & (node_key >= 0), other=0)
            visible = inside & ((index < prefix) | (ancestor != 0))
            rows = (kv_head * keys_total + index)[:, None] * HEAD_DIM + dims[None, :]
            k = tl.load(k_ptr + rows, mask=inside[:, None], other=0.0).to(tl.float32)
            v = tl.load(v_ptr + rows, mask=inside[:, None], other=0.0).to(tl.float32)
            score = tl.sum(k * q[None, :], axis=1) * scale
            score = tl.where(visible, score, -float("inf"))
            new_best = tl.maximum(best, tl.max(score, axis=0))
            correction = tl.exp(best - new_best)
            weight = tl.exp(score - new_best)
            weight = tl.where(visible, weight, 0.0)
            total = total * correction + tl.sum(weight, axis=0)
            acc = acc * correction + tl.sum(weight[:, None] * v, axis=0)
            best = new_best
        tl.store(out_ptr + (head * nodes + node) * HEAD_DIM + dims, acc / total)


def tree_attention_triton(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, prefix: int, tree_mask: torch.Tensor, scale: float,
    block: int = 64,
) -> torch.Tensor:
    """Attention of `q` `[heads, nodes, d]` over `keys`/`values` `[kv_heads, prefix + nodes, d]`.

    Node i sees keys [0, prefix) and key prefix + j where `tree_mask[i, j]`. Returns `[heads, nodes, d]`.
    The root always sees itself, so no row is fully masked.
    """
    if triton is None:
        raise RuntimeError("triton is not installed")
    heads, nodes, head_dim = q.shape
    kv_heads = keys.shape[0]
    if keys.shape[1] != prefix + nodes or heads % kv_heads:
        raise ValueError("keys must hold prefix + nodes positions and kv heads must divide query heads")
    out = torch.empty((heads, nodes, head_dim), dtype=torch.float32, device=q.device)
    _tree_attention_kernel[(nodes, heads)](
        q.contiguous(), keys.contiguous(), values.contiguous(), tree_mask.to(torch.int8).contiguous(), out,
        prefix, nodes, heads // kv_heads, scale, HEAD_DIM=head_dim, BLOCK=block,
    )
    return out.to(q.dtype)
