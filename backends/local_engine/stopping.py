"""When a sequence is done: EOS, a stop string, its token limit, or low confidence — and its final text.

Stop strings are matched on decoded text, not token ids, because a string like
"\\n\\n" or "Answer:" can be split across tokens in many ways. Only a tail
window is decoded per step, so the check costs the same at token 500 as at 5.

A sequence that asked for a `ConfidenceStop` ends as soon as the mean confidence
of its last `window` tokens falls below the threshold (DeepConf's online early
stop): the tokens it would have spent on a trace its caller will discard are saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfidenceStop:
    """Finish once the last `window` tokens' mean confidence is below `threshold`; a token's
    confidence is minus the mean of the `top_k` largest raw log-probabilities at its position."""

    threshold: float
    window: int
    top_k: int


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" (EOS or a stop string), "length" or "confidence"
    text: str


class StopChecker:
    """Decides, token by token, whether a sequence has finished, and renders its text."""

    def __init__(self, tokenizer, eos_ids: set[int]):
        # The engine thread gets its own tokenizer: a fast (Rust) tokenizer shared by two
        # threads can fail with "Already borrowed" while another thread encodes prompts.
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def check(
        self,
        tokens: list[int],
        stop: tuple[str, ...],
        limit: int,
        confidence_stop: ConfidenceStop | None = None,
        confidences: Sequence[float] = (),
    ) -> Finish | None:
        """`tokens` are the completion so far, its newest token last; `confidences` one per token
        (for a `confidence_stop`). A sequence that ends on its own is not stopped for confidence."""
        if tokens and tokens[-1] in self.eos_ids:
            return Finish("stop", self.decode(tokens[:-1]))
        if stop:
            window = max(len(s) for s in stop) + 16
            tail = self.decode(tokens[-window:])
            if any(s in tail for s in stop):
                text = self.decode(tokens)
                cuts = [text.find(s) for s in stop if s in text]
                if cuts:
                    return Finish("stop", text[: min(cuts)])
        if len(tokens) >= limit:
            return Finish("length", self.decode(tokens))
        if confidence_stop is not None and len(confidences) >= confidence_stop.window:
            recent = confidences[-confidence_stop.window :]
            if sum(recent) / confidence_stop.window < confidence_stop.threshold:
                return Finish("confidence", self.decode(tokens))
        return None
