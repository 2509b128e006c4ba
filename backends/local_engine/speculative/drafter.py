"""What every drafter offers the verifier: a tree of guesses, and a hook to learn from the verdict."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from orchestra.backends.local_engine.speculative.draft_tree import DraftTree
from orchestra.backends.local_engine.speculative.verification import Verdict


@dataclass(frozen=True)
class DraftSampling:
    """How the target samples, so a sampling drafter can draw from the same transform of its own logits."""

    temperature: float
    top_k: int = 0
    top_p: float = 1.0


class Drafter(Protocol):
    #: Whether `propose` samples its drafts (and fills `draft_probs`) under a sampling request.
    #: Such drafts need rejection sampling; all others are verified by matching.
    samples: bool
    #: Most nodes (root included) a proposed tree has: the KV room a verification needs.
    max_nodes: int

    def propose(self, context: Sequence[int], sampling: DraftSampling | None, stream: random.Random) -> DraftTree:
        """A tree rooted at `context[-1]` guessing what follows `context`."""
        ...

    def observe(self, tree: DraftTree, logits: torch.Tensor, verdict: Verdict) -> None:
        """The target's logits at every node of `tree` (`[nodes, vocab]`) and what it kept."""
        ...

    def finish(self) -> None:
        """The sequence is done: drop per-sequence state (knowledge meant to persist stays)."""
        ...
