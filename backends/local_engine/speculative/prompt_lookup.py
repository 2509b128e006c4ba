"""Prompt lookup: guess that the text repeats itself — copy what followed the last n-gram before.

Grounded tasks (summarise, edit, answer from a given text) quote their context:
when the last n tokens already occurred earlier, the tokens that followed them
there are a free draft. No model runs; the cost is a scan of the context. The
longest n-gram that matches wins (more specific, more often right); its most
recent occurrence is used (closest to what is being written now).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from orchestra.backends.local_engine.speculative.draft_tree import DraftTree
from orchestra.backends.local_engine.speculative.drafter import DraftSampling
from orchestra.backends.local_engine.speculative.verification import Verdict


class PromptLookupDrafter:
    """Chain drafts copied from the context after the most recent match of its last n-gram."""

    samples = False

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, draft_tokens: int = 8):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if draft_tokens < 1:
            raise ValueError(f"draft_tokens must be >= 1, got {draft_tokens}")
        self.max_ngram, self.min_ngram, self.draft_tokens = max_ngram, min_ngram, draft_tokens
        self.max_nodes = draft_tokens + 1

    def lookup(self, context: Sequence[int]) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the context's final n-gram."""
        length = len(context)
        for n in range(min(self.max_ngram, length - 1), self.min_ngram - 1, -1):
            tail = list(context[length - n :])
            first = tail[0]
            # Latest occurrence that ends before the tail itself and leaves a token to copy.
            for start in range(length - n - 1, -1, -1):
                if context[start] == first and list(context[start : start + n]) == tail:
                    follow = list(context[start + n : start + n + self.draft_tokens])
                    if follow:
                        return follow
        return []

    def propose(self, context: Sequence[int], sampling: DraftSampling | None, stream: random.Random) -> DraftTree:
        return DraftTree.chain(int(context[-1]), self.lookup(context))

    def observe(self, tree: DraftTree, logits: torch.Tensor, verdict: Verdict) -> None:
        """Nothing to learn: the context is the whole model."""

    def finish(self) -> None:
        """No per-sequence state."""
