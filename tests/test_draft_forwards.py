"""Draft forwards are found by name through the generic registry: a forward registered by any
module (here, this test module) drives a draft-model drafter exactly like a built-in one."""

from __future__ import annotations

import random

import pytest
import torch

from orchestra.backends.local_engine.options import SpeculativeOptions
from orchestra.backends.local_engine.speculative.decoder import build_drafter
from orchestra.backends.local_engine.speculative.draft_forwards import (
    DRAFT_FORWARDS,
    DraftTarget,
    build_draft_forward,
    draft_forward,
)
from orchestra.backends.local_engine.speculative.draft_model import DraftModelDrafter
from orchestra.registry import DuplicateName, UnknownName

VOCAB = 50


class _Counting:
    """A runner-like forward that always predicts the last token plus one."""

    num_layers, kv_heads, head_dim = 1, 1, 2
    dtype, device = torch.float32, torch.device("cpu")

    def __init__(self, step: int):
        self.step = step

    def _after(self, tokens: list[int]) -> torch.Tensor:
        logits = torch.zeros(len(tokens), VOCAB)
        logits[torch.arange(len(tokens)), [(t + self.step) % VOCAB for t in tokens]] = 5.0
        return logits

    def prefill(self, pool, rows, want_hidden=False):
        return self._after([row.tokens[-1] for row in rows]), None

    def decode(self, pool, tokens, positions, want_hidden=False):
        return self._after(tokens.tolist()), None


@draft_forward("test_counting")
def counting(target: DraftTarget, step: int = 1) -> _Counting:
    return _Counting(step)


def test_a_registered_draft_forward_is_usable_by_name():
    target = DraftTarget(runner=None)
    assert "test_counting" in DRAFT_FORWARDS and {"layer_skip", "model", "sparse"} <= set(DRAFT_FORWARDS.names())
    assert build_draft_forward("test_counting", target, {"step": 2}).step == 2
    options = SpeculativeOptions(method="draft_model", draft="test_counting", draft_options={"step": 3},
                                 initial_draft_tokens=4, adaptive=False)
    drafter = build_drafter(options, target)
    assert isinstance(drafter, DraftModelDrafter)
    tree = drafter.propose([7, 8, 9], None, random.Random(0))
    assert tree.tokens == (9, 12, 15, 18, 21)  # the root, then four drafts from the registered forward


def test_a_taken_name_raises():
    with pytest.raises(DuplicateName):
        draft_forward("test_counting")(lambda target: _Counting(1))
    with pytest.raises(DuplicateName):
        draft_forward("layer_skip")(lambda target: _Counting(1))


def test_an_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownName, match="did you mean layer_skip"):
        build_draft_forward("layer_skp", DraftTarget(runner=None), {})
