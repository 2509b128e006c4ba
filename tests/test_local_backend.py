"""The local backend on the real default model: exactness, seeds, stops, logprobs, batching."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from orchestra.backends import GenerationRequest
from orchestra.backends import get_backend
from orchestra.problem import Message
from orchestra.backends import ModelSpec

pytestmark = pytest.mark.model

PROMPTS = [
    "What is 3 + 4?",
    "Name a color.",
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "Count from 1 to 10.",
    "Explain what a prime number is in one sentence.",
]


@pytest.fixture(scope="module")
def backend():
    return get_backend(ModelSpec(dtype="float32"))


def ask(prompt: str, **settings) -> GenerationRequest:
    return GenerationRequest(messages=(Message(role="user", content=prompt),), **settings)


def generate(backend, *requests: GenerationRequest):
    async def go():
        return await asyncio.gather(*(backend.generate(r) for r in requests))

    return asyncio.run(go())


def test_greedy_matches_hf_generate(backend):
    for prompt in PROMPTS[:4]:
        request = ask(prompt, max_tokens=24)
        ours = generate(backend, request)[0].completions[0]
        ids = backend.tokenizer(backend.render(request), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = backend.model.generate(**ids, max_new_tokens=24, do_sample=False)
        new = out[0][ids["input_ids"].shape[1]:]
        theirs = backend.tokenizer.decode(new, skip_special_tokens=True)
        assert ours.text == theirs
        assert ours.completion_tokens == len(new)


def test_batching_with_padding_does_not_change_greedy_output(backend):
    requests = [ask(p, max_tokens=16) for p in PROMPTS]
    alone = [generate(backend, r)[0].completions[0].text for r in requests]
    together = [r.completions[0].text for r in generate(backend, *requests)]
    assert together == alone


def test_same_seed_same_samples_and_pools_extend(backend):
    request = ask(PROMPTS[1], n=6, temperature=1.0, max_tokens=12, seed=7)
    first = [c.text for c in generate(backend, request)[0].completions]
    again = [c.text for c in generate(backend, request)[0].completions]
    assert first == again
    assert len(set(first)) > 1, "temperature 1 should give different samples"
    tail = generate(backend, request.model_copy(update={"n": 2, "first_index": 4}))[0]
    assert [c.text for c in tail.completions] == first[4:]
    other = [c.text for c in generate(backend, request.model_copy(update={"seed": 8}))[0].completions]
    assert other != first


def test_top_k_one_is_greedy(backend):
    greedy = generate(backend, ask(PROMPTS[3], max_tokens=12))[0].completions[0].text
    sampled = generate(backend, ask(PROMPTS[3], max_tokens=12, temperature=1.5, top_k=1, seed=3))[0]
    assert sampled.completions[0].text == greedy
    nucleus = generate(backend, ask(PROMPTS[3], max_tokens=12, temperature=1.0, top_p=1e-6, seed=3))[0]
    assert nucleus.completions[0].text == greedy


def test_stop_strings_and_max_tokens(backend):
    result = generate(backend, ask(PROMPTS[4], max_tokens=64, stop=("5",)))[0].completions[0]
    assert "5" not in result.text and result.finish_reason == "stop"
    capped = generate(backend, ask(PROMPTS[2], max_tokens=5))[0].completions[0]
    assert capped.completion_tokens == 5 and capped.finish_reason == "length"


def test_logprobs_and_usage_are_exact(backend):
    backend.clear_prefix_cache()  # a cold prompt: earlier tests cached this one
    request = ask(PROMPTS[0], n=3, temperature=0.8, max_tokens=20, seed=1, logprobs=True)
    result = generate(backend, request)[0]
    assert result.prompt_tokens == backend.count_prompt_tokens(request)
    for completion in result.completions:
        assert completion.logprobs is not None
        assert len(completion.logprobs) == completion.completion_tokens
        assert all(lp <= 0 for lp in completion.logprobs)
    usage = result.usage
    assert usage.completion_tokens == sum(c.completion_tokens for c in result.completions)
    # n samples share one prefill: the prompt is computed once
    assert usage.flops == 2.0 * backend.parameters * (result.prompt_tokens + usage.completion_tokens)
    assert usage.cached_prompt_tokens == 0
    # asked again, the prompt's KV comes from the prefix cache: only its last token is computed
    again = generate(backend, request.model_copy(update={"seed": 2}))[0].usage
    assert again.cached_prompt_tokens == result.prompt_tokens - 1
    assert again.flops == 2.0 * backend.parameters * (1 + again.completion_tokens)


def test_identical_prompts_in_one_batch_share_the_prefill(backend):
    backend.clear_prefix_cache()
    a, b = generate(backend, ask(PROMPTS[0], max_tokens=4), ask(PROMPTS[0], max_tokens=4, temperature=1.0, seed=2))
    assert a.usage.cached_prompt_tokens + b.usage.cached_prompt_tokens == a.prompt_tokens


def test_continuation_from_a_raw_prefix(backend):
    chat = ask(PROMPTS[3], max_tokens=8)
    prefix = backend.render(chat) + "The capital of France is"
    result = generate(backend, GenerationRequest(prompt=prefix, max_tokens=3))[0].completions[0]
    assert "Paris" in result.text


def test_overlong_prompt_is_refused_clearly(backend):
    huge = "word " * (backend.context_length + 10)
    with pytest.raises(ValueError, match="context length"):
        generate(backend, GenerationRequest(prompt=huge, max_tokens=2))


def test_completions_carry_token_ids_that_continuation_ids_continue_exactly(backend):
    request = ask(PROMPTS[4], max_tokens=20, stop=("zzzz",))
    whole = generate(backend, request)[0].completions[0]
    step = generate(backend, request.model_copy(update={"max_tokens": 6}))[0].completions[0]
    assert step.token_ids == whole.token_ids[:6]

    def continuing(partial_ids: tuple[int, ...], **settings) -> GenerationRequest:
        partial = Message(role="assistant", content=backend.tokenizer.decode(partial_ids))
        return request.model_copy(
            update={"messages": (*request.messages, partial), "continuation_ids": partial_ids, **settings}
        )

    children = generate(backend, continuing(step.token_ids, n=2, max_tokens=14))[0]
    assert children.prompt_tokens == backend.count_prompt_tokens(request) + 6
    assert children.usage.cached_prompt_tokens == children.prompt_tokens - 1  # the step's KV was cached
    for completion in children.completions:
        assert step.token_ids + completion.token_ids == whole.token_ids
        assert step.text + completion.text == whole.text
    resumed = generate(backend, continuing(whole.token_ids[:3], max_tokens=17))[0].completions[0]
    assert whole.token_ids[:3] + resumed.token_ids == whole.token_ids


def test_text_continuation_reuses_the_cached_prefix(backend):
    chat = ask(PROMPTS[3], max_tokens=8)
    first = generate(backend, chat)[0].completions[0]
    partial = backend.render(chat) + first.text[: len(first.text) // 2]
    result = generate(backend, GenerationRequest(prompt=partial, max_tokens=4))[0]
    # re-tokenising the partial answer may differ at the seam; everything before it is reused
    assert result.usage.cached_prompt_tokens >= backend.count_prompt_tokens(chat)


def test_hidden_states_on_request(backend):
    result = generate(backend, ask(PROMPTS[1], max_tokens=3, hidden_states=True))[0].completions[0]
    assert result.hidden_states is not None and len(result.hidden_states) == result.completion_tokens
    assert all(len(row) == backend.model.config.hidden_size for row in result.hidden_states)
    assert generate(backend, ask(PROMPTS[1], max_tokens=3))[0].completions[0].hidden_states is None


def test_a_cancelled_call_leaves_the_batch(backend):
    async def go():
        task = asyncio.ensure_future(backend.generate(ask(PROMPTS[2], max_tokens=200, n=4, seed=5, temperature=1.0)))
        # cancelled while its rows decode (waited for, not guessed with a sleep)
        for _ in range(120_000):  # the bound only ends a broken run
            if backend.engine.scheduler.running or task.done():
                break
            await asyncio.sleep(0.001)
        assert backend.engine.scheduler.running, "the call never reached the running batch"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await backend.generate(ask(PROMPTS[0], max_tokens=2))

    assert generate_result_text(asyncio.run(go()))
    for _ in range(120_000):  # the cancelled rows go at the engine's next step; the bound only ends a broken run
        if not backend.engine.scheduler.running:
            break
        time.sleep(0.001)
    assert not backend.engine.scheduler.running


def generate_result_text(result) -> str:
    return result.completions[0].text


def test_the_generation_cache_key_names_the_dtype_in_use(backend):
    assert backend.model_key == "local:smollm2-135m-instruct:float32"
    assert backend.dtype == "float32" and backend.engine.runner.dtype == torch.float32
