"""One sequence being generated: its tokens, its random stream, where its KV lives."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.thinking import ThinkingSpan

_ids = itertools.count()


@dataclass(frozen=True)
class FinishedSequence:
    """What a sequence produced; submitting its `context` continues it token-exactly.

    `token_ids` end with whatever ended the sequence (the EOS token, or the tokens
    that spelled a stop string); `text` leaves both out. Continuing a sequence that
    ended on a stop string (a step boundary) continues after that boundary.
    """

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str  # "stop", "length" or "confidence"
    logprobs: tuple[float, ...] | None
    #: Per position, the `top_logprobs` most likely (token id, raw log-probability) pairs, if asked for.
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] | None
    #: Final-layer hidden state that predicted each token (`[len(token_ids), hidden]`), if asked for.
    hidden_states: torch.Tensor | None
    #: Prompt tokens whose KV this sequence computed itself (the rest came from the prefix cache or a sibling).
    computed_prompt_tokens: int

    @property
    def context(self) -> tuple[int, ...]:
        return self.prompt_ids + self.token_ids


@dataclass(eq=False)
class Sequence:
    """Mutable state, owned by the engine thread: the scheduler places it and appends its tokens."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams
    stream: random.Random
    limit: int  # most completion tokens (max_tokens capped by the context length)
    future: Future = field(default_factory=Future)
    id: int = field(default_factory=lambda: next(_ids))
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    #: Per token, its confidence (for a `confidence_stop`): minus the mean of the top-k raw log-probabilities.
    confidences: list[float] = field(default_factory=list)
    slot: int = -1
    kv_length: int = 0  # positions of `context` whose KV sits in the slot
    computed_prompt_tokens: int = 0
    prefilled: bool = False
    #: Context positions its earlier prefill pieces left in the prefix cache (chunked prefill; 0: none).
    parked_length: int = 0
    mlp_state: object = None  # what the runner's MLP plugin learnt from this sequence's prefill
    admitted_at: int = 0  # scheduler step that last admitted it (preemption takes the newest)
    #: Its thinking span, when its params bound one.
    thinking: ThinkingSpan | None = field(init=False, default=None)
    #: Masks the logits to the tokens its JSON schema allows next (`constrained.TokenConstraint`).
    constraint: object = None
    #: Called on the engine thread with the tokens so far after each step that added some (streaming).
    listener: Callable[[tuple[int, ...]], None] | None = None

    def __post_init__(self) -> None:
        if self.params.thinking is not None:
            self.thinking = ThinkingSpan(self.params.thinking)

    @property
    def context(self) -> list[int]:
        return [*self.prompt_ids, *self.tokens]

    def finished(self, reason: str, text: str) -> FinishedSequence:
        return FinishedSequence(
            prompt_ids=self.prompt_ids,
            token_ids=tuple(self.tokens),
            text=text,
            finish_reason=reason,
            logprobs=tuple(self.logprobs) if self.params.logprobs else None,
            top_logprobs=tuple(self.top) if self.params.top_logprobs else None,
            hidden_states=torch.stack(self.hidden) if self.params.hidden_states and self.hidden else None,
            computed_prompt_tokens=self.computed_prompt_tokens,
        )
