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


def test_a_float32_prefill_writes_a_bfloat16_pool_that_a_bfloat16_decode_continues() -> None:
    """Prefill and decode in different precisions (`precision`'s per-phase verdict): the float32
    runner writes its own keys and values, rounded to the pool's bfloat16, continues a
    prompt in a second piece over what it wrote, and the bfloat16 decode after it gives HF's
    float32 logits to within bfloat16's rounding."""
    model = tiny_llama()
    low = tiny_llama().to(torch.bfloat16)
    high_runner, low_runner = LlamaRunner(model), LlamaRunner(low)
    pools = {
        dtype: KVPool(layers=3, kv_heads=2, head_dim=16, dtype=dtype, device=torch.device("cpu"), byte_limit=1 << 24)
        for dtype in (torch.float32, torch.bfloat16)
    }
    prompt = (3, 4, 5, 6, 7, 8, 9)
    with torch.inference_mode():
        for pool in pools.values():
            pool.reserve(1, 32)
            high_runner.prefill(pool, [PrefillRow(0, 0, prompt[:4])])
        low_kv, high_kv = pools[torch.bfloat16].storage, pools[torch.float32].storage
        # the first layer's exactly (later layers' attention read the rounded keys before them)
        assert torch.equal(low_kv[0], high_kv[0].to(torch.bfloat16))
        assert torch.allclose(low_kv.float(), high_kv, atol=1e-2)
        first, _ = high_runner.prefill(pools[torch.bfloat16], [PrefillRow(0, 4, prompt[4:])])
        logits, _ = low_runner.decode(pools[torch.bfloat16], torch.tensor([10]), torch.tensor([len(prompt)]))
        theirs = model(torch.tensor([[*prompt, 10]])).logits[0]
    assert first.dtype == torch.float32
    assert torch.allclose(first[0], theirs[len(prompt) - 1], atol=2e-2)
    assert torch.allclose(logits[0], theirs[-1], atol=5e-2)
    assert not torch.allclose(logits[0], theirs[-1], atol=1e-5)  # bfloat16 did round: the check above has work to do
