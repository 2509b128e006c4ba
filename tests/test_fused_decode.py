"""The compiled decode step of quantized CPU models (`fused_decode`) against the runner's Python step."""

from __future__ import annotations

import pytest
import torch
from tiny_llama import tiny_llama

from orchestra.backends.local_engine import fused_decode
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.backends.local_engine.quantized_linear import PACKED_ROWS


def pool_for(runner: LlamaRunner, slots: int, length: int = 64) -> KVPool:
    pool = KVPool(layers=runner.num_layers, kv_heads=runner.kv_heads, head_dim=runner.head_dim,
                  dtype=runner.dtype, device=runner.device, byte_limit=1 << 30)
    pool.reserve(slots, length)
    return pool


def decode_both_ways(runner: LlamaRunner, prompts: list[list[int]], steps: list[tuple[list[int], list[int]]]):
    """Logits of each (tokens, positions) step and the pool afterwards, with the compiled step
    and then with the Python one, each on a pool of its own prefilled with `prompts`."""
    compiled = runner.fused_decode
    assert compiled is not None, "the fused step was not built (see the log for why)"
    results = []
    for step in (compiled, None):
        runner.fused_decode = step
        pool = pool_for(runner, len(prompts))
        with torch.inference_mode():
            runner.prefill(pool, [PrefillRow(slot, 0, tuple(p)) for slot, p in enumerate(prompts)])
            logits = [runner.decode(pool, torch.tensor(t), torch.tensor(p))[0] for t, p in steps]
        results.append((logits, pool.storage))
    runner.fused_decode = compiled
    return results


@pytest.mark.parametrize("kind", ["int8", "int4", "w8a8"])
def test_the_compiled_step_gives_the_python_steps_logits_and_kv(kind: str) -> None:
    """Batch 1 and a batch of 3 at different positions (masked attention), four steps each:
    the products are the same kernels, so only the loops' float rounding may differ."""
    runner = LlamaRunner(tiny_llama())
    runner.quantize(kind)
    prompts = [list(range(5, 9)), list(range(20, 27)), list(range(40, 50))]
    steps = []
    for step in range(4):
        steps.append(([7], [4 + step]))
        steps.append(([7, 8, 9], [4 + step, 7 + step, 10 + step]))
    (ours, our_pool), (python, python_pool) = decode_both_ways(runner, prompts, steps)
    for a, b in zip(ours, python):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_pool, python_pool, rtol=1e-5, atol=1e-5)
    assert python_pool.abs().sum() > 0


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_batch_wider_than_the_packed_kernels_takes_the_dense_products(kind: str) -> None:
    rows = PACKED_ROWS + 4
    runner = LlamaRunner(tiny_llama())
    runner.quantize(kind)
    prompts = [[3 + row % 50, 4, 5] for row in range(rows)]
    steps = [([9] * rows, [3] * rows), ([10] * rows, [4] * rows)]
    (ours, _), (python, _) = decode_both_ways(runner, prompts, steps)
    for a, b in zip(ours, python):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_python_step_serves_what_the_compiled_one_does_not(monkeypatch) -> None:
    float_runner = LlamaRunner(tiny_llama())
    assert float_runner.fused_decode is None
    assert fused_decode.unsupported_reason(float_runner) == "it serves quantized models"
    monkeypatch.setenv(fused_decode.ENVIRONMENT_SWITCH, "0")
    switched_off = LlamaRunner(tiny_llama())
    switched_off.quantize("int8")
    assert switched_off.fused_decode is None
    monkeypatch.delenv(fused_decode.ENVIRONMENT_SWITCH)
    runner = LlamaRunner(tiny_llama())
    runner.quantize("int8")
    pool = pool_for(runner, 1)
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(0, 0, (5, 6, 7))])
        _, hidden = runner.decode(pool, torch.tensor([8]), torch.tensor([3]), want_hidden=True)
    assert hidden is not None and hidden.shape == (1, runner.hidden_size)  # hidden states: the Python step


@pytest.mark.model
@pytest.mark.parametrize(("kind", "tolerance"), [("int4", 2e-2), ("w8a8", 0.25)])
def test_on_the_default_model_the_compiled_step_decodes_what_the_python_step_does(kind: str, tolerance: float) -> None:
    """Teacher-forced: the same 12 tokens fed to both steps at batch 1 and at batch 2; the greedy
    choice agrees at every step and the logits stay within rounding of each other. int4's
    products read bfloat16 activations and its int8 head returns bfloat16 logits, so a last-bit
    difference in a norm can move a logit by a bfloat16 step (1/128 of its size); w8a8's can
    cross one of its 127 activation levels (see the engine test below): `tolerance` is a
    fraction of the largest logit."""
    from orchestra.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct", "float32")
    runner = LlamaRunner(model)
    runner.quantize(kind)
    prompt = tokenizer("The capital of France is Paris. The capital of Italy is", add_special_tokens=False)["input_ids"]
    fed = tokenizer(" Rome, and the capital of Spain is Madrid.", add_special_tokens=False)["input_ids"][:12]
    start = len(prompt)
    steps = [([t], [start + i]) for i, t in enumerate(fed)]
    steps += [([t, t], [start + i, start + i]) for i, t in enumerate(fed)]  # batch 2 (masked attention)
    (ours, our_pool), (python, python_pool) = decode_both_ways(runner, [prompt, prompt], steps)
    for a, b in zip(ours, python):
        assert torch.equal(a.argmax(-1), b.argmax(-1))
        assert (a - b).abs().max() < tolerance * b.abs().max()
    assert (our_pool - python_pool).abs().max() < tolerance * python_pool.abs().max()


def test_without_a_working_compiler_the_python_step_serves(monkeypatch, tmp_path, caplog) -> None:
    """A failed build is a warning, never an error: the runner keeps its Python step."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level("WARNING", logger=fused_decode.__name__):
        assert fused_decode._extension.__wrapped__() is None
    assert "could not be built" in caplog.text and "the Python step serves" in caplog.text
    monkeypatch.setattr(fused_decode, "_extension", lambda: None)
    runner = LlamaRunner(tiny_llama())
    runner.quantize("int4")
    assert runner.fused_decode is None
    pool = pool_for(runner, 1)
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(0, 0, (5, 6, 7))])
        logits, _ = runner.decode(pool, torch.tensor([8]), torch.tensor([3]))
    assert logits.shape == (1, 96)


@pytest.mark.model
def test_inside_the_engine_each_step_matches_the_python_step() -> None:
    """Through the whole engine (scheduler, 6 prompts of mixed lengths joining one batch, rows
    finishing at different steps): every decode step the compiled step takes is also taken by the
    Python step on a copy of the pool, and their logits compared row by row.

    w8a8 rounds each activation row to 127 levels of its largest value, so a last-bit difference
    that lands on a level boundary moves the logits far more than rounding does (perturbing the
    activations by one part in 10^7 moved the default model's logits by several percent of the
    largest one, in a check made while writing this test).
    So: the greedy choice agrees in nearly every row (a crossing may tip a near tie), most rows
    agree to float rounding (a wrong slot, position or mask would break most of them), and none
    is off by more than a level crossing."""
    from orchestra.backends.local_engine import InferenceEngine, SamplingParams
    from orchestra.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct", "float32")
    prompts = ["What is 3 + 4?", "Name a color.", "Write a haiku about the sea.",
               "What is the capital of France?", "Count from 1 to 10.", "Is 17 a prime number?"]
    encoded = [
        tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        for p in prompts
    ]
    engine = InferenceEngine(model, tokenizer, quantization="w8a8")
    runner = engine.runner
    assert runner.fused_decode is not None
    decode, compared = runner.decode, []

    def checked_decode(pool, tokens, positions, want_hidden=False, highest=None):
        before = pool.storage.clone()
        ours = decode(pool, tokens, positions, want_hidden, highest)
        after, pool.storage = pool.storage, before
        compiled, runner.fused_decode = runner.fused_decode, None
        python = decode(pool, tokens, positions, want_hidden, highest)
        runner.fused_decode, pool.storage = compiled, after
        compared.append((ours[0], python[0]))
        return ours

    runner.decode = checked_decode
    try:
        futures = [engine.submit(ids, SamplingParams(max_tokens=16 + 4 * i))[0] for i, ids in enumerate(encoded)]
        assert all(f.result().token_ids for f in futures)
    finally:
        engine.close()
    assert len(compared) >= 30 and {ours.shape[0] for ours, _ in compared} >= {6, 1}
    agreeing = torch.cat([ours.argmax(-1) == python.argmax(-1) for ours, python in compared])
    assert agreeing.float().mean() > 0.95
    relative = torch.cat([(ours - python).abs().amax(-1) / python.abs().amax(-1) for ours, python in compared])
    assert (relative < 1e-5).float().mean() > 0.75
    assert relative.max() < 0.25
