"""The inference engine on the real default model (float32): exactness, prefix reuse,
continuous batching, chunked prefill, seeds, token-exact continuation, hidden states, memory limits,
static shapes."""

from __future__ import annotations

import math
import time

import pytest
import torch

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.backends.local_engine.prefix_cache import PrefixCache
from orchestra.models import load_pretrained

pytestmark = pytest.mark.model

PROMPTS = [
    "What is 3 + 4?",
    "Name a color.",
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Count from 1 to 10.",
    "Explain what a prime number is in one sentence.",
    "What is 12 times 11?",
    "Give me a synonym for happy.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Translate 'good morning' into French.",
    "List three fruits.",
    "What is the square root of 81?",
    "Describe a cat in five words.",
    "What day comes after Monday?",
    "Is 17 a prime number?",
    "What is the largest planet in our solar system?",
    "Spell the word 'necessary' backwards.",
    "What is 100 minus 37?",
    "Name an animal that lives in the ocean.",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def loaded():
    return load_pretrained("smollm2-135m-instruct", "float32")


@pytest.fixture(scope="module")
def engine(loaded):
    model, tokenizer = loaded
    engine = InferenceEngine(model, tokenizer)
    yield engine
    engine.close()


def encode(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def greedy(tokens: int = NEW_TOKENS, **settings) -> SamplingParams:
    return SamplingParams(max_tokens=tokens, **settings)


def test_greedy_matches_hf_generate_on_20_prompts_decoded_together(loaded, engine):
    model, tokenizer = loaded
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    futures = [engine.submit(ids, greedy())[0] for ids in prompts]  # one continuous batch, mixed lengths
    ours = [f.result() for f in futures]
    for ids, result in zip(prompts, ours):
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        theirs = out[0, len(ids):].tolist()
        assert list(result.token_ids) == theirs
        if result.finish_reason == "length":
            assert len(theirs) == NEW_TOKENS


def test_logits_with_a_reused_prefix_equal_a_full_recompute(loaded):
    model, tokenizer = loaded
    runner = LlamaRunner(model)
    pool = KVPool(layers=runner.num_layers, kv_heads=runner.kv_heads, head_dim=runner.head_dim,
                  dtype=runner.dtype, device=runner.device, byte_limit=1 << 30)
    prefix = encode(tokenizer, PROMPTS[2])
    full = prefix + encode(tokenizer, "And another about the mountains.")[1:]
    pool.reserve(3, len(full) + 1)
    cache = PrefixCache(byte_limit=1 << 30)
    with torch.inference_mode():
        runner.prefill(pool, [PrefillRow(0, 0, tuple(prefix))])
        cache.insert(prefix, lambda a, b: pool.read(0, a, b))
        found = cache.match(full)
        assert found.length == len(prefix)
        pool.write(1, 0, torch.cat(found.blocks, dim=3))
        reused, _ = runner.prefill(pool, [PrefillRow(1, found.length, tuple(full[found.length:]))])
        fresh, _ = runner.prefill(pool, [PrefillRow(2, 0, tuple(full))])
        hf = model(torch.tensor([full])).logits[0, -1].float()
    assert torch.allclose(reused[0], fresh[0], atol=1e-4)
    assert torch.allclose(reused[0], hf, atol=1e-3)


def test_n_samples_cost_one_prefill_and_a_repeat_costs_one_token(loaded, engine):
    _, tokenizer = loaded
    engine.clear_prefix_cache()
    ids = encode(tokenizer, PROMPTS[5])
    before = engine.stats.prompt_tokens_computed
    results = engine.generate(ids, greedy(4, temperature=1.0), n=8, seed=1)
    assert engine.stats.prompt_tokens_computed - before == len(ids)
    assert sum(r.computed_prompt_tokens for r in results) == len(ids)
    again = engine.generate(ids, greedy(4, temperature=1.0), n=8, seed=2)
    assert sum(r.computed_prompt_tokens for r in again) == 1  # only the last prompt token, for its logits
    # a different question behind the same chat preamble reuses the preamble
    other = engine.generate(encode(tokenizer, PROMPTS[6]), greedy(2))[0]
    assert other.computed_prompt_tokens < len(encode(tokenizer, PROMPTS[6])) - 10


def test_seeded_samples_do_not_depend_on_the_batch(loaded, engine):
    _, tokenizer = loaded
    ids = encode(tokenizer, PROMPTS[1])
    params = greedy(12, temperature=1.0, top_p=0.95, top_k=50)
    alone = [r.token_ids for r in engine.generate(ids, params, n=4, seed=11)]
    crowd = [engine.submit(encode(tokenizer, p), greedy(8, temperature=0.8), n=2, seed=3) for p in PROMPTS[:6]]
    mine = engine.submit(ids, params, n=4, seed=11)
    assert [f.result().token_ids for f in mine] == alone
    assert len(set(alone)) > 1
    for futures in crowd:
        [f.result() for f in futures]
    third = engine.generate(ids, params, n=1, seed=11, first_index=2)[0]
    assert third.token_ids == alone[2]


def test_short_requests_leave_while_a_long_one_keeps_decoding(loaded, engine):
    _, tokenizer = loaded
    long = engine.submit(encode(tokenizer, PROMPTS[4]), SamplingParams(max_tokens=48, stop=("zzzz",)))[0]
    steps = engine.stats.decode_steps
    while engine.stats.decode_steps < steps + 2:
        time.sleep(0.005)
    short = [engine.submit(encode(tokenizer, p), greedy(3))[0] for p in PROMPTS[7:10]]
    for future in short:
        assert future.result().token_ids  # they joined the running batch and finished ...
    assert not long.done()  # ... while the long one, started earlier, was still decoding
    assert long.result().finish_reason == "length" and len(long.result().token_ids) == 48


def test_continuations_reuse_the_kv_and_match_one_long_decode(loaded, engine):
    _, tokenizer = loaded
    ids = encode(tokenizer, PROMPTS[4])
    whole = engine.generate(ids, greedy(24, stop=("zzzz",)))[0]
    step = engine.generate(ids, greedy(8))[0]
    children = engine.generate(step.context, greedy(16, stop=("zzzz",)), n=3)  # particles of one step
    for child in children:
        assert child.prompt_ids == tuple(ids) + step.token_ids
        assert step.token_ids + child.token_ids == whole.token_ids
    # the step's KV was cached when it finished: the children compute one token (the step's last)
    assert sum(c.computed_prompt_tokens for c in children) == 1
    resumed = engine.generate([*ids, *step.token_ids[:5]], greedy(19, stop=("zzzz",)))[0]
    assert step.token_ids[:5] + resumed.token_ids == whole.token_ids
    assert resumed.computed_prompt_tokens == 1


def test_hidden_states_on_request(loaded, engine):
    model, tokenizer = loaded
    ids = encode(tokenizer, PROMPTS[3])
    result = engine.generate(ids, greedy(5, hidden_states=True, logprobs=True))[0]
    assert result.hidden_states.shape == (5, model.config.hidden_size)
    assert len(result.logprobs) == 5
    with torch.inference_mode():
        out = model(torch.tensor([ids + list(result.token_ids[:-1])]), output_hidden_states=True)
    theirs = out.hidden_states[-1][0, len(ids) - 1:]  # the final (normed) states that predicted each token
    assert torch.allclose(result.hidden_states, theirs.float(), atol=1e-3)
    assert engine.generate(ids, greedy(2))[0].hidden_states is None


def test_memory_limit_preempts_and_resumes_without_changing_output(loaded, engine):
    model, tokenizer = loaded
    prompts = [encode(tokenizer, p) for p in PROMPTS[10:16]]
    expected = [f.result().token_ids for f in [engine.submit(p, greedy(20))[0] for p in prompts]]
    per_token = engine.pool.bytes_per_token
    width = max(len(p) for p in prompts)
    tight = InferenceEngine(model, tokenizer, EngineConfig(kv_cache_bytes=4 * (width + 16) * per_token,
                                                          prefix_cache_bytes=64 << 20))
    tight.pool.length_step = 8
    try:
        got = [f.result().token_ids for f in [tight.submit(p, greedy(20))[0] for p in prompts]]
        assert got == expected
        assert tight.stats.preemptions > 0
        assert tight.pool.nbytes <= 4 * (width + 16) * per_token
    finally:
        tight.close()


def test_a_long_prompt_is_prefilled_in_pieces_while_another_decodes_without_changing_output(loaded, engine):
    model, tokenizer = loaded
    long_ids = encode(tokenizer, " ".join(PROMPTS[:6]))  # several pieces of 16
    expected = engine.generate(long_ids, greedy(8))[0].token_ids
    chunked = InferenceEngine(model, tokenizer, EngineConfig(prefill_tokens=16))
    try:
        short_ids = encode(tokenizer, PROMPTS[4])
        running = chunked.submit(short_ids, SamplingParams(max_tokens=200, stop=("zzzz",)))[0]
        while chunked.stats.decode_steps < 2:
            time.sleep(0.005)
        forwards, steps = chunked.stats.prefill_forwards, chunked.stats.decode_steps
        result = chunked.generate(long_ids, greedy(8))[0]
        shared = next(i for i, (a, b) in enumerate(zip(short_ids, long_ids)) if a != b)  # the chat preamble, cached
        assert result.token_ids == expected and result.computed_prompt_tokens == len(long_ids) - shared
        pieces = math.ceil((len(long_ids) - shared) / 16)
        assert chunked.stats.prefill_forwards - forwards == pieces  # 16 tokens a forward, none twice
        assert chunked.stats.decode_steps - steps >= pieces - 1 + 7  # the other decoded between the pieces
        assert not running.done()
    finally:
        chunked.close()


def test_static_shape_decode_path_gives_the_same_tokens(loaded, engine):
    model, tokenizer = loaded
    prompts = [encode(tokenizer, p) for p in PROMPTS[15:20]]
    expected = [f.result().token_ids for f in [engine.submit(p, greedy(10))[0] for p in prompts]]
    static = InferenceEngine(model, tokenizer, EngineConfig(static_shapes=True, max_batch_size=8,
                                                           kv_cache_bytes=256 << 20))
    try:
        assert static.pool.fixed and static.pool.slots == 8
        got = [f.result().token_ids for f in [static.submit(p, greedy(10))[0] for p in prompts]]
        assert got == expected
        assert static.runner.buckets(5, 40) == (8, 256)
        assert (8, 256) in static.runner._graphs  # the padded bucket really ran
    finally:
        static.close()


def test_bad_input_is_refused_clearly(engine):
    with pytest.raises(ValueError, match="no tokens"):
        engine.submit([], greedy())
    with pytest.raises(ValueError, match="context length"):
        engine.submit([1] * engine.context_length, greedy())
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_precision_probe_times_real_decode_steps(loaded):
    from orchestra.backends.local_engine.precision import time_decode

    model, _ = loaded
    seconds = time_decode(model, batch=2, context=8, steps=2)
    assert 0 < seconds < math.inf  # a real measurement; how long it took depends on the machine


def test_precision_probe_times_a_real_prefill(loaded):
    from orchestra.backends.local_engine.precision import machine_key, time_prefill

    model, _ = loaded
    seconds = time_prefill(model, tokens=40)
    assert 0 < seconds < math.inf  # a real measurement; how long it took depends on the machine
    assert machine_key("m").endswith("|per phase")  # verdicts of one precision for both phases are not reused
