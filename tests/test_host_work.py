"""A decode step's host work stays at what it needs: one upload (the step's tokens and positions)
and one read (the sampled tokens with their log-probabilities). On a GPU every other read is a
stall and every other upload a copy; they are counted here, on the CPU, where the same calls are
made (`orchestra.backends.local_engine.host_work`)."""

from __future__ import annotations

import pytest
import torch
from tiny_llama import exactly, prompt, tiny_engine, tiny_llama

from orchestra.backends.local_engine.host_work import count_host_work, counting_host_work

STEPS = 6


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def _per_decode_step(engine, ids, **settings) -> dict[str, float]:
    """Host work of STEPS decode steps beyond the prefill, per step."""
    prefill = count_host_work(lambda: engine.generate(ids, exactly(1, **settings)))
    decoding = count_host_work(lambda: engine.generate(ids, exactly(1 + STEPS, **settings)))
    return {kind: (decoding[kind] - prefill[kind]) / STEPS for kind in ("reads", "uploads")}


@pytest.mark.parametrize("static_shapes", [False, True])
def test_a_greedy_decode_step_reads_once_and_uploads_once(model, static_shapes):
    engine = tiny_engine(model, static_shapes=static_shapes)
    try:
        engine.generate(prompt(20), exactly(2))  # warm: buckets, rotary tables, the EOS ids on the device
        assert _per_decode_step(engine, prompt(20)) == {"reads": 1, "uploads": 1}
        with engine.together():  # two rows, one of them past its min_tokens: still one of each
            futures = [engine.submit(prompt(20), exactly(1 + STEPS))[0], engine.submit(prompt(9), exactly(2))[0]]
        assert [len(f.result().token_ids) for f in futures] == [1 + STEPS, 2]
    finally:
        engine.close()


def test_a_sampled_decode_step_uploads_its_settings_once(model):
    engine = tiny_engine(model)
    try:
        engine.generate(prompt(20), exactly(2))
        plain = _per_decode_step(engine, prompt(20), temperature=0.8)
        assert plain == {"reads": 1, "uploads": 2}  # tokens and positions; every row's settings and draw
        nucleus = _per_decode_step(engine, prompt(20), temperature=0.8, top_p=0.9)
        assert nucleus == {"reads": 2, "uploads": 2}  # plus: does every nucleus fit its candidates?
    finally:
        engine.close()


def test_the_counter_sees_every_kind_and_restores_torch():
    item, tensor = torch.Tensor.item, torch.tensor
    with counting_host_work() as counts:
        value = torch.tensor([1.0, 2.0])
        int(value[0]), float(value[1]), value.tolist(), value.cpu(), bool(value[0] > 0), value.sum().item()
        torch.as_tensor([3])
    assert counts == {"reads": 6, "uploads": 2}
    assert torch.Tensor.item is item and torch.tensor is tensor
