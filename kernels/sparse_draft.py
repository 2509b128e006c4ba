"""A cheaper forward of the same model, for sparse self-drafting in speculative decoding.

The drafter needs something that proposes tokens like the target model but costs
less per token. `sparse_draft_forward` returns a shallow copy of the engine's
runner — same weights, same KV layout, same `prefill` / `decode` /
`decode_over` signatures — whose decode MLPs are TEAL-sparse. Nothing is copied
but the runner object itself, and the target runner is left dense.

TEAL, not CoreInfer: TEAL needs no per-sequence state, so the draft can run on
any slots of any KV pool without the engine's prefill/decode hooks. The draft
writes its own K/V (its hidden states differ from the target's), so it should
decode into a pool of its own (or into positions the target overwrites when it
verifies).
"""

from __future__ import annotations

import copy

from orchestra.kernels.sparse_mlp import TealKernel, TealMLP
from orchestra.kernels.teal_calibration import load_or_calibrate


def sparse_draft_forward(runner, tokenizer, model_name: str, sparsity: float = 0.5, kernel: TealKernel = "auto"):
    """A copy of `runner` (a `LlamaRunner`) whose decode MLPs drop `sparsity` of their inputs.

    `runner.model` is calibrated (or its stored thresholds loaded) for `model_name`
    at `sparsity`. The result has the runner's interface:
    `prefill(pool, rows, want_hidden) -> (logits, hidden)` and
    `decode(pool, tokens, positions, want_hidden) -> (logits [B, vocab], hidden)`.
    """
    thresholds = load_or_calibrate(runner.model, tokenizer, model_name, sparsity)
    draft = copy.copy(runner)
    draft.mlp_plugin = TealMLP(thresholds, kernel)
    return draft
