"""An engine that prefills in one precision and decodes in another (`precision`'s per-phase
verdict: on a CPU without bfloat16 units float32 prefills about 3x faster, while bfloat16 reads
half the bytes a decoded token), on a random tiny Llama and on the default model."""

from __future__ import annotations

import pytest
import torch
from tiny_llama import EOS, Tokenizer, exactly, prompt, tiny_llama

from orchestra.backends.local_engine import EngineConfig, InferenceEngine


def _engine(model, **settings) -> InferenceEngine:
    return InferenceEngine(
        model, Tokenizer(), EngineConfig(prefix_cache_bytes=1 << 20, max_batch_size=4), eos_ids={EOS}, **settings
    )


def test_prompts_go_through_the_prefill_model_and_tokens_through_the_decode_model():
    high, low = tiny_llama(), tiny_llama().to(torch.bfloat16)
    mixed, reference = _engine(low, prefill_model=high), _engine(high)
    prefilled = []
    prefill = mixed.prefill_runner.prefill
    mixed.prefill_runner.prefill = lambda pool, rows, want_hidden=False: prefilled.append(rows) or prefill(pool, rows, want_hidden)
    try:
        assert mixed.pool.dtype == torch.bfloat16 and mixed.prefill_runner.dtype == torch.float32
        ours = mixed.generate(prompt(20), exactly(6))[0].token_ids
        theirs = reference.generate(prompt(20), exactly(6))[0].token_ids
        assert len(prefilled) == 1 and len(ours) == 6
        assert ours[0] == theirs[0]  # the first token is float32's: only the prompt's cached KV was rounded
        again = mixed.generate(prompt(20) + [5, 6, 7], exactly(2))[0].token_ids  # the cached prefix, then a piece
        assert len(prefilled) == 2 and prefilled[1][0].start > 0 and len(again) == 2
    finally:
        mixed.close()
        reference.close()


def test_a_prefill_model_of_its_own_is_for_dense_unquantized_weights():
    with pytest.raises(ValueError, match="dense, unquantized"):
        _engine(tiny_llama(), prefill_model=tiny_llama(), quantization="int8")


@pytest.mark.model
def test_the_default_model_prefills_in_float32_and_decodes_in_bfloat16():
    """`prefill_dtype: float32` beside `dtype: bfloat16`, through the backend: its own cache key;
    the first token's log-probabilities are float32's to within the prompt's KV rounded to
    bfloat16, and the decode after it runs in bfloat16."""
    from orchestra.backends.local import LocalBackend
    from orchestra.backends.local_engine import SamplingParams
    from orchestra.backends.model_spec import ModelSpec

    mixed = LocalBackend(ModelSpec(dtype="bfloat16", prefill_dtype="float32"))
    high = LocalBackend(ModelSpec(dtype="float32"))
    assert mixed.model_key == "local:smollm2-135m-instruct:bfloat16:prefill=float32"
    ids = mixed.tokenizer("The capital of France is Paris. The capital of Italy is", add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=8, top_logprobs=5)
    try:
        assert mixed.engine.prefill_runner.dtype == torch.float32 and mixed.engine.pool.dtype == torch.bfloat16
        ours, theirs = (b.engine.generate(ids, params)[0] for b in (mixed, high))
        assert ours.token_ids[0] == theirs.token_ids[0]
        first_ours, first_theirs = dict(ours.top_logprobs[0]), dict(theirs.top_logprobs[0])
        common = first_ours.keys() & first_theirs.keys()
        assert len(common) >= 4 and all(abs(first_ours[t] - first_theirs[t]) < 0.1 for t in common)
        assert mixed.tokenizer.decode(ours.token_ids).strip().startswith("Rome")
    finally:
        mixed.engine.close()
        high.engine.close()


def test_prefill_dtype_is_refused_with_quantization_or_sparse_mlps():
    from orchestra.backends.local import LocalOptions

    with pytest.raises(ValueError, match="dense, unquantized"):
        LocalOptions(prefill_dtype="float32", quantization="w8a8")
