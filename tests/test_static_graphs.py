"""The static-shape (CUDA-graph) decode path on a tiny random Llama, on the CPU.

`static_shapes=True` runs exactly the code that is captured as CUDA graphs on a GPU,
without capturing, so what goes wrong there (a draft replaying the target's step,
a step over a pool that grew or was released, a context longer than the static
pool) goes wrong here too — and is checked here, in seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_llama import KV_BYTES_PER_TOKEN, exactly, prompt, tiny_engine, tiny_llama

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.options import SpeculativeOptions
from orchestra.backends.local_engine.speculative.draft_forwards import RunnerForward


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


#: Long enough that the draft's own pool grows past the smallest attention-width bucket.
PROMPT = prompt(200)


def _plain(model, ids, tokens):
    engine = tiny_engine(model)
    try:
        return engine.generate(ids, exactly(tokens))[0].token_ids
    finally:
        engine.close()


def test_a_draft_and_the_target_never_share_a_static_step(model):
    """The layer-skip draft decodes (and fills its own buckets), then the target decodes plainly at
    the same bucket: each must run its own layers over its own pool. (The sparse draft is the same
    kind of copy, with a plugin: the next test.)"""
    expected = _plain(model, PROMPT, 12)
    options = SpeculativeOptions(method="draft_model", draft="layer_skip", draft_options={"layers": 1})
    engine = tiny_engine(model, options, static_shapes=True, kv_cache_bytes=4 << 20)
    try:
        speculated = engine.generate(PROMPT, exactly(12))[0].token_ids  # the draft decodes at batch 1
        two = engine.generate(PROMPT, exactly(12), n=2)  # two rows: the target's plain decode, bucket (2, 256)
        alone = engine.generate(PROMPT, exactly(12, top_logprobs=1))
        assert speculated == expected
        assert [s.token_ids for s in two] == [expected, expected]
        assert alone[0].token_ids == expected  # batch 1, no speculation: the bucket the draft used
    finally:
        engine.close()


def test_a_copied_runner_owns_its_steps_and_a_plugin_runner_runs_eagerly(model):
    engine = tiny_engine(model, static_shapes=True, kv_cache_bytes=4 << 20)
    try:
        engine.generate(PROMPT[:20], exactly(4))
        assert engine.runner._graphs  # the target captured its bucket
        twin = copy.copy(engine.runner)
        assert twin._graphs == {} and twin._graphs is not engine.runner._graphs
        twin.mlp_plugin = _DenseMLP()  # a plugin runner takes the eager path
        pool = RunnerForward(copy.copy(engine.runner)).pool  # a draft's own one-slot static pool
        assert pool.fixed and pool.static_shape == (1, engine.runner.pool_shape[1])
        with torch.inference_mode():
            eager = twin.decode(pool, torch.tensor([3]), torch.tensor([20]))[0]
            assert twin._graphs == {}
            twin.mlp_plugin = None
            static = twin.decode(pool, torch.tensor([3]), torch.tensor([20]))[0]
        assert torch.allclose(eager, static, atol=1e-5) and list(twin._graphs) == [(1, 256)]
    finally:
        engine.close()


class _DenseMLP:
    """An MLP plugin that computes the dense MLP (what a sparse plugin approximates)."""

    def __call__(self, index, x, gate_up, down, slots):
        gate, up = torch.nn.functional.linear(x, gate_up).chunk(2, dim=-1)
        return torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, down)


@pytest.mark.parametrize("prompt_length, new_tokens", [(400, 6), (250, 20)])
def test_contexts_longer_than_the_static_pool_fall_back_to_the_eager_pool(model, prompt_length, new_tokens):
    """A static pool of 4 x 256 positions: a 400-token prompt, and a 250-token one that grows past 256."""
    long = prompt(prompt_length, stride=11)
    expected = _plain(model, long, new_tokens)
    engine = tiny_engine(model, static_shapes=True, kv_cache_bytes=4 * 256 * KV_BYTES_PER_TOKEN)
    try:
        assert engine.runner.pool_shape == (4, 256) and engine.context_length == 4096
        assert engine.generate(long, exactly(new_tokens))[0].token_ids == expected
        # Back on a fresh static allocation afterwards: short prompts run static steps again.
        short = prompt(30, stride=5)
        assert engine.generate(short, exactly(5))[0].token_ids == _plain(model, short, 5)
        assert engine.pool.fixed and engine.pool.slots == 4
        assert all(step.over(engine.pool) for step in engine.runner._graphs.values())
    finally:
        engine.close()


def test_a_pool_leaves_its_static_allocation_only_while_it_must():
    pool = KVPool(layers=1, kv_heads=1, head_dim=2, dtype=torch.float32, device=torch.device("cpu"),
                  byte_limit=4 * 256 * 16, static_shape=(4, 256))  # 16 bytes a token
    static = pool.generation
    pool.reserve(2, 200)
    assert pool.fixed and pool.generation == static
    pool.storage[0, 0, 0, 0, 9, 0] = 5.0
    pool.storage[0, 0, 1, 0, 199, 0] = 7.0
    assert pool.fits(1, 600) and not pool.fits_static(1, 600)
    pool.reserve(2, 300)  # two rows past the static length: a growable allocation, contents kept
    assert not pool.fixed and pool.length >= 300 and pool.storage[0, 0, 1, 0, 199, 0] == 7.0
    assert pool.storage[0, 0, 0, 0, 9, 0] == 5.0
    pool.reserve(1, 250)  # fits again: a fresh static allocation, the one live row carried over
    assert pool.fixed and pool.generation > static
    assert pool.storage[0, 0, 0, 0, 9, 0] == 5.0 and pool.storage[0, 0, 1, 0, 199, 0] == 0.0
    assert pool.storage.shape[2] == 4 and pool.length == 256
    pool.release()
    assert pool.fixed and pool.slots == 4  # the static allocation survives a release


@pytest.mark.parametrize("method", ["prompt_lookup", "token_recycling", "layer_skip"])
def test_speculative_verification_at_static_shapes_gives_plain_greedy(model, method):
    """The verification forward runs padded to a bucket of nodes over a bucketed width (captured
    as a graph on a GPU); greedy output stays plain greedy's, token for token."""
    options = {
        "prompt_lookup": SpeculativeOptions(method="prompt_lookup", draft_tokens=6),
        "token_recycling": SpeculativeOptions(method="token_recycling"),
        "layer_skip": SpeculativeOptions(method="draft_model", draft="layer_skip", draft_options={"layers": 1}),
    }[method]
    prompts = [PROMPT[:40], prompt(60, stride=3) * 2, prompt(25, stride=13)]
    expected = [_plain(model, ids, 16) for ids in prompts]
    engine = tiny_engine(model, options, static_shapes=True, kv_cache_bytes=4 << 20)
    try:
        got = [engine.generate(ids, exactly(16))[0].token_ids for ids in prompts]
        assert got == expected
        assert engine.speculative.stats.rounds > 0
        assert any(key[0] == "tree" for key in engine.runner._graphs)  # verification ran at static shapes
    finally:
        engine.close()
