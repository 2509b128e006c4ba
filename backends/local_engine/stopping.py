"""When a sequence is done: EOS, a stop string, or its token limit — and its final text.

Stop strings are matched on decoded text, not token ids, because a string like
"\\n\\n" or "Answer:" can be split across tokens in many ways. Only a tail
window is decoded per step, so the check costs the same at token 500 as at 5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" (EOS or a stop string) or "length"
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

    def check(self, tokens: list[int], stop: tuple[str, ...], limit: int) -> Finish | None:
        """`tokens` are the completion so far, its newest token last."""
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
        return None
