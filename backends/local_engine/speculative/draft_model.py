"""A draft model: a cheaper forward of the same vocabulary proposes, the target verifies.

"Cheaper" is anything that maps tokens to next-token logits incrementally: a
smaller model sharing the tokenizer, the target with its later layers skipped
(self-speculation), or the target with sparse MLPs. It keeps its own KV cache;
at each round it catches up on the tokens the target accepted since the last
round (rejected drafts are overwritten: only the common prefix is kept) and
then drafts one token at a time.

How many tokens to draft adapts to how well it has been doing:
- the +2/-1 rule: two more after a round where every draft was kept, one fewer
  after a round with a rejection (bounded by `max_draft_tokens`);
- a confidence stop in the spirit of SpecDec++: stop drafting once the draft's
  own probability for its token falls below `confidence`, because a token the
  draft itself doubts is likely rejected and every later token with it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import torch

from orchestra.backends.local_engine.speculative.draft_tree import DraftTree
from orchestra.backends.local_engine.speculative.drafter import DraftSampling
from orchestra.backends.local_engine.speculative.verification import Verdict
from orchestra.kernels.rejection_sampling import inverse_cdf, processed_probs


class IncrementalForward(Protocol):
    """Next-token logits over a private KV cache that is extended a few tokens at a time."""

    def extend(self, tokens: Sequence[int], start: int) -> torch.Tensor:
        """Feed `tokens` at positions start, start+1, ... (KV before `start` is kept, later KV is
        overwritten); return the logits `[vocab]` after the last of them."""
        ...

    def release(self) -> None:
        """Drop the cache's memory."""
        ...


class DraftModelDrafter:
    """Chain drafts from a cheaper forward, with an adaptive draft length."""

    def __init__(
        self,
        forward: IncrementalForward,
        max_draft_tokens: int = 8,
        initial_draft_tokens: int = 4,
        adaptive: bool = True,
        confidence: float = 0.0,
        sample: bool = True,
    ):
        if not 1 <= initial_draft_tokens <= max_draft_tokens:
            raise ValueError("need 1 <= initial_draft_tokens <= max_draft_tokens")
        if not 0.0 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0, 1), got {confidence}")
        self.forward = forward
        self.max_draft_tokens = max_draft_tokens
        self.max_nodes = max_draft_tokens + 1
        self.initial_draft_tokens = initial_draft_tokens
        self.draft_tokens = initial_draft_tokens
        self.adaptive = adaptive
        self.confidence = confidence
        #: Draw drafts from the draft distribution when the request samples (rejection sampling).
        self.samples = sample
        self._cached: list[int] = []

    def _catch_up(self, context: Sequence[int]) -> torch.Tensor:
        common = 0
        limit = min(len(self._cached), len(context) - 1)  # the last token is always fed: its logits are needed
        while common < limit and self._cached[common] == context[common]:
            common += 1
        logits = self.forward.extend(list(context[common:]), common)
        self._cached = list(context)
        return logits

    def propose(self, context: Sequence[int], sampling: DraftSampling | None, stream: random.Random) -> DraftTree:
        logits = self._catch_up(context)
        drafted: list[int] = []
        distributions: list[torch.Tensor] = []
        for index in range(self.draft_tokens):
            if sampling is not None and self.samples:
                probs = processed_probs(logits[None], sampling.temperature, sampling.top_k, sampling.top_p)
                token = int(inverse_cdf(probs, torch.tensor([stream.random()]))[0])
                distributions.append(probs[0])
                confident = float(probs[0, token]) >= self.confidence
            else:
                probs = torch.softmax(logits.float(), dim=-1)
                token = int(probs.argmax())
                confident = float(probs[token]) >= self.confidence
            if not confident and index > 0:
                if distributions:
                    distributions.pop()
                break
            drafted.append(token)
            if index + 1 < self.draft_tokens:
                logits = self.forward.extend([token], len(self._cached))
                self._cached.append(token)
        draft_probs = torch.stack(distributions) if distributions else None
        return DraftTree.chain(int(context[-1]), drafted, draft_probs)

    def observe(self, tree: DraftTree, logits: torch.Tensor, verdict: Verdict) -> None:
        if not self.adaptive:
            return
        if verdict.accepted == len(tree) - 1:
            self.draft_tokens = min(self.draft_tokens + 2, self.max_draft_tokens)
        else:
            self.draft_tokens = max(self.draft_tokens - 1, 1)

    def finish(self) -> None:
        self._cached = []
        self.draft_tokens = self.initial_draft_tokens
        self.forward.release()
