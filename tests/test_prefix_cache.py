"""The radix-tree prefix cache and the KV pool, on synthetic KV (no model needed)."""

from __future__ import annotations

import pytest
import torch

from orchestra.backends.local_engine.kv_pool import KVPool, KVPoolFull
from orchestra.backends.local_engine.prefix_cache import PrefixCache

LAYERS, HEADS, DIM = 2, 1, 4
BYTES_PER_TOKEN = LAYERS * 2 * HEADS * DIM * 4


def kv_for(tokens):
    """Synthetic KV whose values identify (token, position): checks that blocks line up."""
    def read(start: int, end: int) -> torch.Tensor:
        values = torch.tensor([[t * 1000 + p for p, t in enumerate(tokens)][start:end]], dtype=torch.float32)
        return values[None, None, :, :, None].expand(LAYERS, 2, HEADS, end - start, DIM).clone()
    return read


def joined(match) -> list[float]:
    return torch.cat(match.blocks, dim=3)[0, 0, 0, :, 0].tolist() if match.blocks else []


def test_longest_prefix_is_found_across_splits():
    cache = PrefixCache(byte_limit=1 << 20)
    a = [1, 2, 3, 4, 5]
    assert cache.insert(a, kv_for(a)) == 5
    b = [1, 2, 3, 9, 9, 9]
    assert cache.insert(b, kv_for(b)) == 3  # shares 1,2,3: the edge is split, only 9,9,9 is new
    assert cache.match([1, 2, 3, 4, 5, 6]).length == 5
    found = cache.match([1, 2, 3, 9, 9, 7])
    assert found.length == 5
    assert joined(found) == [1000, 2001, 3002, 9003, 9004]
    assert cache.match([2, 1]).length == 0
    assert cache.match(a, limit=4).length == 4  # a caller can keep the last token to compute
    assert cache.insert(a, kv_for(a)) == 0  # already there
    assert cache.stored_tokens == 8


def test_lru_leaves_are_evicted_under_the_byte_limit():
    cache = PrefixCache(byte_limit=10 * BYTES_PER_TOKEN)
    old, hot, new = [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]
    cache.insert(old, kv_for(old))
    cache.insert(hot, kv_for(hot))
    cache.match(hot)  # touched: more recent than `old`
    cache.insert(new, kv_for(new))  # 12 tokens > 10: the least recently used leaf goes
    assert cache.match(old).length == 0
    assert cache.match(hot).length == 4 and cache.match(new).length == 4
    assert cache.nbytes <= cache.byte_limit
    assert cache.evicted_bytes == 4 * BYTES_PER_TOKEN


def test_a_parent_is_evicted_only_after_its_children():
    cache = PrefixCache(byte_limit=7 * BYTES_PER_TOKEN)
    cache.insert([5, 6, 7, 8], kv_for([5, 6, 7, 8]))
    cache.insert([5, 6, 9, 9], kv_for([5, 6, 9, 9]))  # 6 tokens: [5,6] -> {[7,8], [9,9]}
    cache.match([5, 6, 9, 9])
    cache.insert([4, 4], kv_for([4, 4]))  # 8 > 7: evict [7,8] (oldest leaf), never [5,6] under [9,9]
    assert cache.match([5, 6, 9, 9]).length == 4
    assert cache.match([5, 6, 7, 8]).length == 2
    cache.clear()
    assert cache.match([5, 6]).length == 0 and cache.nbytes == 0


def test_disabled_cache_stores_nothing():
    cache = PrefixCache(byte_limit=0)
    assert cache.insert([1, 2], kv_for([1, 2])) == 0
    assert cache.match([1, 2]).length == 0


def make_pool(limit: int) -> KVPool:
    return KVPool(layers=LAYERS, kv_heads=HEADS, head_dim=DIM, dtype=torch.float32,
                  device=torch.device("cpu"), byte_limit=limit, length_step=8)


def test_pool_grows_keeping_contents_and_refuses_past_its_limit():
    pool = make_pool(limit=4 * 32 * BYTES_PER_TOKEN)
    pool.reserve(2, 5)
    block = kv_for([7, 8, 9])(0, 3)
    pool.write(1, 0, block)
    pool.reserve(3, 20)
    assert pool.slots >= 3 and pool.length >= 20
    assert torch.equal(pool.read(1, 0, 3), block)
    pool.copy_slot(1, 2, 3)
    assert torch.equal(pool.read(2, 0, 3), block)
    assert pool.fits(4, 32) and not pool.fits(5, 32)
    with pytest.raises(KVPoolFull, match="limit"):
        pool.reserve(5, 32)


def test_auto_precision_is_measured_once_per_machine_and_chosen_per_phase(monkeypatch, tmp_path):
    from orchestra.backends.local_engine import precision

    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    calls = []

    def fake_measure(model):
        calls.append(model)
        return {"float32": {"decode": 2.0, "prefill": 1.0}, "bfloat16": {"decode": 1.0, "prefill": 3.0}}

    monkeypatch.setattr(precision, "measure", fake_measure)
    assert precision.fastest_cpu_dtypes("some-model", object) == ("bfloat16", "float32")

    def no_weights():
        raise AssertionError("a remembered verdict must not load the model")

    verdict = precision.fastest_cpu_dtypes("some-model", no_weights)
    assert (verdict.decode, verdict.prefill) == ("bfloat16", "float32")
    assert len(calls) == 1  # the verdict was remembered
    assert "some-model" in (tmp_path / "precision.json").read_text()
    precision.fastest_cpu_dtypes("another-model", object)
    assert len(calls) == 2
