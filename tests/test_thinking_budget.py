"""Thinking budgets: the span's bookkeeping token by token (fast), what servers are sent, and the
mechanism on the real default model (marked `model`). The default model does not think in tags, so
the real-model tests bound its answer span (`end: null`, the span ends at EOS): budget forcing
writes "Wait" over an early EOS and decoding goes on; a maximum cuts the span where it should."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from orchestra.backends import GenerationRequest, ModelSpec, ThinkingBudget, get_backend
from orchestra.backends.local_engine.thinking import ThinkingSpan, ThinkingTokens
from orchestra.problem import Message

EOS, END, WAIT, CLOSE = 0, 9, (7, 8), (5, 9)


def _run(budget: ThinkingTokens, sampled: list[int]) -> tuple[list[int], list[float], ThinkingSpan]:
    span = ThinkingSpan(budget)
    out = [span.next_token(token, -1.0, frozenset({EOS})) for token in sampled]
    return [t for t, _ in out], [lp for _, lp in out], span


def test_an_early_end_becomes_wait_until_the_minimum() -> None:
    tokens, logprobs, span = _run(ThinkingTokens(min_tokens=6, end_id=END, wait_ids=WAIT), [1, 2, END, 99, 3, 4, END, 6])
    # END at 2 thoughts -> "Wait" (7, 8; the sampled 99 is overwritten by the queued 8); END at 6 closes
    assert tokens == [1, 2, 7, 8, 3, 4, END, 6]
    assert logprobs == [-1.0, -1.0, 0.0, 0.0, -1.0, -1.0, -1.0, -1.0]
    assert span.thought == 6 and not span.open


def test_eos_while_thinking_is_an_early_end_too() -> None:
    tokens, _, span = _run(ThinkingTokens(min_tokens=4, end_id=END, wait_ids=WAIT), [1, EOS, 2, 3, EOS])
    assert tokens == [1, 7, 8, 3, EOS] and span.thought == 4 and not span.open


def test_the_maximum_writes_the_close_then_lets_the_answer_run() -> None:
    budget = ThinkingTokens(max_tokens=3, end_id=END, close_ids=CLOSE)
    tokens, logprobs, span = _run(budget, [1, 2, 3, 4, 4, 6, END, 7])
    assert tokens == [1, 2, 3, 5, 9, 6, END, 7]  # after 3 thoughts: the close (5, </think>), then the answer
    assert logprobs[3:5] == [0.0, 0.0] and span.thought == 3 and not span.open


def test_a_span_closed_in_budget_is_left_alone() -> None:
    tokens, _, span = _run(ThinkingTokens(max_tokens=5, min_tokens=1, end_id=END, close_ids=CLOSE, wait_ids=WAIT),
                           [1, 2, END, 3, 3, 3, 3, 3])
    assert tokens == [1, 2, END, 3, 3, 3, 3, 3] and span.thought == 2


def test_budget_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="below min_tokens"):
        ThinkingBudget(max_tokens=4, min_tokens=8)
    with pytest.raises(ValidationError, match="needs max_tokens, min_tokens"):
        ThinkingBudget()
    with pytest.raises(ValueError, match="needs the tokens"):
        ThinkingTokens(max_tokens=4)
    with pytest.raises(ValueError, match="local backend"):
        ThinkingBudget(max_tokens=8, min_tokens=2).server_budget("model 'm'")
    assert ThinkingBudget(max_tokens=64).server_budget("model 'm'") == 64


def test_a_server_is_sent_the_maximum_as_vllms_thinking_token_budget() -> None:
    from orchestra.backends.openai_http import OpenAIBackend

    server = OpenAIBackend(ModelSpec(backend="openai", model="m", openai={"endpoints": ["http://127.0.0.1:9/v1"]}))
    ask = dict(messages=(Message(role="user", content="hi"),))
    _, body = server._body(GenerationRequest(**ask, thinking=ThinkingBudget(max_tokens=128)), 1, 0)
    assert body["thinking_token_budget"] == 128
    _, body = server._body(GenerationRequest(**ask), 1, 0)
    assert "thinking_token_budget" not in body
    with pytest.raises(ValueError, match="budget forcing"):
        server._body(GenerationRequest(**ask, thinking=ThinkingBudget(min_tokens=16)), 1, 0)


def test_the_budget_keys_cached_samples() -> None:
    ask = dict(messages=(Message(role="user", content="hi"),))
    plain = GenerationRequest(**ask).sampling_key()
    assert "thinking" not in plain
    assert GenerationRequest(**ask, thinking=ThinkingBudget(max_tokens=8)).sampling_key() != plain


# ----- the real default model -------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    return get_backend(ModelSpec(dtype="float32"))


def _complete(backend, **settings):
    request = GenerationRequest(
        messages=(Message(role="user", content="What is 3 + 4? Reply with the number only."),), seed=0, **settings
    )
    return asyncio.run(backend.generate(request)).completions[0]


@pytest.fixture(scope="module")
def plain(backend):
    """The greedy reply without a budget: it ends on its own, well before its token limit."""
    reply = _complete(backend, max_tokens=64)
    assert reply.finish_reason == "stop" and 2 <= reply.completion_tokens < 40
    return reply


@pytest.mark.model
def test_budget_forcing_writes_wait_over_an_early_eos_and_decoding_continues(backend, plain) -> None:
    eos = plain.token_ids[-1]
    answer = plain.token_ids[:-1]  # the reply before its EOS
    wait = tuple(backend.tokenizer("Wait", add_special_tokens=False)["input_ids"])
    minimum = len(answer) + len(wait) + 8
    forced = _complete(backend, max_tokens=96, thinking=ThinkingBudget(end=None, min_tokens=minimum))
    ids = forced.token_ids
    assert ids[: len(answer)] == answer  # the same reply up to where it stopped
    assert ids[len(answer) : len(answer) + len(wait)] == wait  # its EOS became "Wait"
    assert len(ids) > minimum  # and decoding went on past the minimum
    assert eos not in ids[:minimum]  # no end before the minimum
    assert forced.text.startswith(plain.text + "Wait")


@pytest.mark.model
def test_a_maximum_cuts_the_span_where_it_should(backend, plain) -> None:
    cut = 3
    assert len(plain.token_ids) > cut + 1
    ended = _complete(backend, max_tokens=64, thinking=ThinkingBudget(end=None, max_tokens=cut))
    assert ended.token_ids == (*plain.token_ids[:cut], plain.token_ids[-1])  # cut after 3 tokens, by EOS
    assert ended.finish_reason == "stop" and ended.text == backend.tokenizer.decode(plain.token_ids[:cut])

    close = " So the answer is"
    closed = _complete(backend, max_tokens=64, thinking=ThinkingBudget(end=None, max_tokens=cut, close=close))
    close_ids = tuple(backend.tokenizer(close, add_special_tokens=False)["input_ids"])
    assert closed.token_ids[:cut] == plain.token_ids[:cut]
    assert closed.token_ids[cut : cut + len(close_ids)] == close_ids  # the close, written at the cut
    assert len(closed.token_ids) > cut + len(close_ids)  # then the answer was generated
    assert closed.text.startswith(backend.tokenizer.decode(plain.token_ids[:cut]) + close)


@pytest.mark.model
def test_bounds_the_reply_keeps_to_change_nothing(backend, plain) -> None:
    roomy = _complete(backend, max_tokens=64, thinking=ThinkingBudget(end=None, max_tokens=60, min_tokens=1))
    assert roomy.token_ids == plain.token_ids and roomy.text == plain.text


@pytest.mark.model
def test_a_thinking_end_missing_from_the_vocabulary_is_refused(backend) -> None:
    with pytest.raises(ValueError, match="not one token of its vocabulary"):
        _complete(backend, max_tokens=8, thinking=ThinkingBudget(max_tokens=4))
