"""Cheaper forwards of the target that a draft-model drafter can run: a registry of builders.

A builder takes the `DraftTarget` (the target's `LlamaRunner`, and the tokenizer
and name it was loaded with) and options and returns a runner-like
object with the same `prefill` / `decode` methods and pool geometry
(`num_layers`, `kv_heads`, `head_dim`, `dtype`, `device`); `RunnerForward`
gives it a private KV pool and the drafter's incremental interface. Built in:

- `layer_skip` — the target's first `layers` decoder layers, then its final norm
  and LM head (self-speculative drafting: no second model, shared weights);
- `model` — a separate, smaller model with the same tokenizer (`model: ALIAS`);
- `sparse` — the target itself with TEAL-sparse decode MLPs (sparse self-drafting);
  calibrates (or loads) its thresholds with the target's tokenizer and name.

Other kinds register with the `draft_forward(name)` decorator, from any module a
plugin package names in the `orchestra.draft_forwards` entry-point group.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.registry import Registry


@dataclass(frozen=True)
class DraftTarget:
    """The model a draft forward drafts for: its runner, and what it was loaded with
    (for draft forwards that calibrate on it, like `sparse`)."""

    runner: LlamaRunner
    tokenizer: Any = None
    model_name: str | None = None


#: builder(target, **options) -> a runner-like object (prefill/decode over a KVPool).
DraftForwardBuilder = Callable[..., Any]

#: Draft forwards by name: the built-ins below, then plugins' (entry-point group `orchestra.draft_forwards`).
DRAFT_FORWARDS: Registry[DraftForwardBuilder] = Registry("draft forward", "orchestra.draft_forwards", [__name__])


def draft_forward(name: str) -> Callable[[DraftForwardBuilder], DraftForwardBuilder]:
    """Decorator: make `builder(target, **options)` available as `draft: NAME` (a taken name raises)."""
    return DRAFT_FORWARDS.decorator(name)


def build_draft_forward(name: str, target: DraftTarget, options: dict[str, Any]) -> Any:
    """The draft forward `name` for `target`; an unknown name raises `UnknownName` (with suggestions)."""
    return DRAFT_FORWARDS.get(name)(target, **options)


@draft_forward("layer_skip")
def layer_skip(target: DraftTarget, layers: int | None = None) -> LlamaRunner:
    """The target truncated to its first `layers` layers (default: a third), same norm and head.

    A shallow copy: every weight is the target's own tensor, nothing is duplicated (a
    static-shape runner's copy starts with no captured steps of its own).
    """
    runner = target.runner
    layers = layers if layers is not None else max(1, runner.num_layers // 3)
    if not 1 <= layers < runner.num_layers:
        raise ValueError(f"layer_skip keeps 1..{runner.num_layers - 1} of the target's layers, got {layers}")
    draft = copy.copy(runner)
    draft.layers = runner.layers[:layers]
    draft.num_layers = layers
    return draft


@draft_forward("model")
def separate_model(target: DraftTarget, model: str, dtype: str | None = None) -> LlamaRunner:
    """Another model (an alias `orchestra.models` knows, or an HF folder) with the target's vocabulary."""
    from orchestra.models import load_pretrained

    dtype = dtype or str(target.runner.dtype).removeprefix("torch.")
    hf_model, _ = load_pretrained(model, dtype)
    hf_model.to(target.runner.device)
    runner = LlamaRunner(hf_model)
    if runner.lm_head.weight.shape[0] != target.runner.lm_head.weight.shape[0]:
        raise ValueError(f"draft model {model!r} has a different vocabulary size than the target")
    return runner


@draft_forward("sparse")
def sparse_mlps(target: DraftTarget, sparsity: float = 0.5, kernel: str = "auto") -> LlamaRunner:
    """The target drafting for itself with `sparsity` of its decode-MLP inputs dropped (TEAL).

    A shallow copy of the runner with a `TealMLP` plugin: same weights, same KV layout,
    the target itself left dense. TEAL, not CoreInfer: it needs no per-sequence state, so
    the draft runs on its own pool without the engine's prefill/decode hooks. The dense
    target verifies, so the output stays lossless.
    """
    from orchestra.kernels.sparse_mlp import TealMLP
    from orchestra.kernels.teal_calibration import load_or_calibrate
    from orchestra.paths import teal_thresholds_folder

    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"the sparse draft's sparsity must be in (0, 1), got {sparsity}")
    if target.tokenizer is None or target.model_name is None:
        raise ValueError("the sparse draft calibrates on the target: it needs the target's tokenizer and model name")
    runner = target.runner
    thresholds = load_or_calibrate(runner.model, target.tokenizer, target.model_name, sparsity, teal_thresholds_folder())
    draft = copy.copy(runner)
    draft.mlp_plugin = TealMLP(thresholds, kernel)
    return draft


class RunnerForward:
    """A runner-like forward with its own one-slot KV pool, extended a few tokens at a time."""

    def __init__(self, runner: Any, byte_limit: int = 1 << 30):
        self.runner = runner
        # A static-shape runner (CUDA graphs) drafts over its own one-slot static pool.
        static_length = getattr(runner, "pool_shape", (0, 0))[1]
        self.pool = KVPool(
            layers=runner.num_layers,
            kv_heads=runner.kv_heads,
            head_dim=runner.head_dim,
            dtype=runner.dtype,
            device=runner.device,
            byte_limit=byte_limit,
            static_shape=(1, static_length) if static_length else None,
        )

    def extend(self, tokens: Sequence[int], start: int) -> torch.Tensor:
        device = self.runner.device
        self.pool.reserve(1, start + len(tokens))
        with torch.inference_mode():
            if len(tokens) == 1:
                token, position = torch.tensor([[tokens[0]], [start]], device=device)  # one upload
                logits, _ = self.runner.decode(self.pool, token, position)
            else:
                logits, _ = self.runner.prefill(self.pool, [PrefillRow(0, start, tuple(tokens))])
        return logits[0]

    def release(self) -> None:
        self.pool.release()
