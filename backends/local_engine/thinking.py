"""Thinking budgets: bounds on the thinking span of a model that thinks in tags (`<think>…</think>`).

The span runs from the start of the completion to its end token (`</think>`,
or the end of the sequence for a model without tags). Two bounds act on it as
tokens are decoded, by replacing the token the sampler chose:

- a maximum: once the span holds `max_tokens` tokens and is still open, the
  engine writes the closing tokens itself (`</think>`, or any text), and the
  model goes on to write its answer (vLLM's hard thinking limit);
- a minimum: an end of the span (the end token, or EOS) before `min_tokens` is
  replaced by "Wait" and decoding continues (budget forcing, as in s1 and
  optillm's thinkdeeper).

Forced tokens are fed back one per decode step, exactly like sampled ones, so
their KV is computed as the sequence goes and continuing a finished sequence
stays token-exact. A forced token was not sampled: its log-probability is
reported as 0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ThinkingTokens:
    """A thinking budget in token ids (the backend spells its strings with the model's tokenizer)."""

    max_tokens: int | None = None
    min_tokens: int = 0
    #: The token that ends thinking; None: the span ends with the sequence (EOS).
    end_id: int | None = None
    #: Written when the span reaches `max_tokens` (the end token, or EOS, when the span has no tag).
    close_ids: tuple[int, ...] = ()
    #: Written instead of an early end (below `min_tokens`).
    wait_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"thinking max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")
        if self.max_tokens is not None and not self.close_ids:
            raise ValueError("a thinking maximum needs the tokens that close the span")
        if self.min_tokens and not self.wait_ids:
            raise ValueError("a thinking minimum needs the tokens written instead of an early end")


class ThinkingSpan:
    """One sequence's thinking span: counts its tokens and replaces the sampler's choice when a bound acts."""

    def __init__(self, budget: ThinkingTokens) -> None:
        self.budget = budget
        #: Tokens written inside the span so far (forced "Wait" tokens included).
        self.thought = 0
        self.open = True
        self._closing = False
        self._forced: deque[int] = deque()

    def next_token(self, sampled: int, logprob: float, eos_ids: frozenset[int]) -> tuple[int, float]:
        """The token to append in place of `sampled` (with its log-probability)."""
        token, logprob = self._choose(sampled, logprob, eos_ids)
        if self.open and not self._closing:
            self.thought += 1
        if self._closing and not self._forced:
            self.open, self._closing = False, False
        return token, logprob

    def _choose(self, sampled: int, logprob: float, eos_ids: frozenset[int]) -> tuple[int, float]:
        budget = self.budget
        if self._forced:
            return self._forced.popleft(), 0.0
        if not self.open:
            return sampled, logprob
        ends = sampled in eos_ids or sampled == budget.end_id
        if ends and self.thought < budget.min_tokens:
            self._forced.extend(budget.wait_ids)  # budget forcing: think on
            return self._forced.popleft(), 0.0
        if ends:
            self.open = False  # the model closed its span in budget
            return sampled, logprob
        if budget.max_tokens is not None and self.thought >= budget.max_tokens:
            self._closing = True
            self._forced.extend(budget.close_ids)
            return self._forced.popleft(), 0.0
        return sampled, logprob
