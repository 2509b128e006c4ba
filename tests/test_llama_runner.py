"""The runner's forms of change that must not change values, on a random tiny Llama (no model download)."""

from __future__ import annotations

import pytest
import torch
from tiny_llama import tiny_llama

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow, RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_rms_norm_gives_the_modules_own_values(dtype: torch.dtype) -> None:
    module = tiny_llama().model.norm.to(dtype)
    module.weight.data = torch.randn(64).to(dtype)
    x = torch.randn(3, 5, 64).to(dtype)
    assert torch.equal(RMSNorm(module)(x), module(x))


def test_decode_writes_each_rows_kv_at_its_own_position_and_matches_hf() -> None:
    """Two rows at different positions (scatter writes): their logits equal HF's forward over each
    row's whole context, and nothing else in the pool is touched."""
    model = tiny_llama()
    runner = LlamaRunner(model)
    pool = KVPool(layers=3, kv_heads=2, head_dim=16, dtype=torch.float32, device=torch.device("cpu"), byte_limit=1 << 24)
    pool.reserve(2, 32)
    prompts = [(3, 4, 5, 6, 7), (8, 9)]
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(slot, 0, prompt) for slot, prompt in enumerate(prompts)])
        before = pool.storage.clone()
        logits, _ = runner.decode(pool, torch.tensor([10, 11]), torch.tensor([5, 2]))
        for row, (prompt, token) in enumerate(zip(prompts, (10, 11))):
            theirs = model(torch.tensor([[*prompt, token]])).logits[0, -1]
            assert torch.allclose(logits[row], theirs, atol=1e-4)
    changed = (pool.storage != before).nonzero()
    assert {(int(c[2]), int(c[4])) for c in changed} == {(0, 5), (1, 2)}  # (slot, position) only
