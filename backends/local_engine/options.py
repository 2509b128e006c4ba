"""Settings of the local engine's optional decoding methods: speculative decoding and sparse MLPs.

A recipe's `speculative:` and `sparse:` blocks, validated with the rest of the
recipe before anything runs. Plain pydantic, no torch: importing this module
does not load the engine.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SpeculativeOptions(BaseModel):
    """Batch-1 speculative decoding on the local backend: a drafter guesses, the model verifies.

    Lossless: greedy output is token for token that of plain decoding, and so is seeded
    sampling under `acceptance: match` (the default). `acceptance: rejection` lets a draft
    model sample its drafts (more accepted tokens at high temperature); the output then
    follows the same distribution, but a seed gives a different sample than plain decoding.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["prompt_lookup", "draft_model", "token_recycling"] = Field(
        description="prompt_lookup: copy what followed the context's last n-gram; draft_model: a cheaper "
        "forward drafts (see `draft`); token_recycling: a tree from the model's own recent top-k predictions."
    )
    draft_tokens: int = Field(default=8, ge=1, le=64, description="Most tokens one chain draft proposes.")
    min_ngram: int = Field(default=1, ge=1, description="prompt_lookup: shortest n-gram matched.")
    max_ngram: int = Field(default=3, ge=1, description="prompt_lookup: longest n-gram matched (tried first).")
    draft: str = Field(
        default="layer_skip",
        description="draft_model: which cheaper forward — layer_skip (the model's first layers), model "
        "(another model, `draft_options: {model: ALIAS}`), or a registered one (e.g. sparse).",
    )
    draft_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the draft forward, e.g. {layers: 20} or {model: ALIAS}."
    )
    adaptive: bool = Field(default=True, description="draft_model: +2 draft tokens after a fully kept draft, -1 after a rejection.")
    initial_draft_tokens: int = Field(default=4, ge=1, description="draft_model: draft length of a new sequence.")
    confidence: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="draft_model: stop drafting when the draft's probability of its token falls below this."
    )
    top_k: int = Field(default=8, ge=1, le=64, description="token_recycling: next tokens remembered per token.")
    tree_widths: tuple[int, ...] = Field(
        default=(4, 3, 2, 2, 1, 1, 1, 1), min_length=1, description="token_recycling: children per node at each depth."
    )
    tree_expand: int = Field(default=2, ge=1, description="token_recycling: nodes of each level expanded further.")
    acceptance: Literal["match", "rejection"] = Field(
        default="match",
        description="match: drafts kept when they equal the model's own (seeded) pick — outputs identical to "
        "plain decoding; rejection: draft_model samples drafts, verified by rejection sampling.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeOptions:
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) is above max_ngram ({self.max_ngram})")
        if self.top_k < max(self.tree_widths):
            raise ValueError(f"top_k ({self.top_k}) must cover the widest tree level ({max(self.tree_widths)})")
        if self.acceptance == "rejection" and self.method != "draft_model":
            raise ValueError("acceptance 'rejection' needs method draft_model (the other drafters do not sample)")
        if self.method != "draft_model" and (self.draft_options or self.draft != "layer_skip"):
            raise ValueError("`draft` and `draft_options` are for method draft_model")
        return self

    @property
    def changes_samples(self) -> bool:
        """Whether a seeded sample can differ from plain decoding's (so cached samples are not shared)."""
        return self.acceptance == "rejection"

    def fingerprint(self) -> str:
        """A short stable name of these settings, for cache keys."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


class SparseOptions(BaseModel):
    """Sparse activation in the local engine's decode MLPs (see `orchestra.kernels.sparse_mlp`).

    It changes the model's outputs, so it is part of the model's generation-cache key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["coreinfer", "teal"] = Field(
        description="coreinfer: after each prompt's prefill, decode with the MLP neurons most active on it "
        "(weights sliced once per sequence). teal: zero each token's MLP inputs below per-layer magnitude "
        "thresholds (calibrated once per model and sparsity, stored under $ORCHESTRA_HOME/sparse/teal)."
    )
    sparsity: float = Field(
        ge=0.0, lt=1.0, description="Share of MLP neurons (coreinfer) or MLP inputs (teal) dropped in decode; 0 is dense."
    )
    kernel: Literal["auto", "masked", "columns", "triton"] = Field(
        default="auto",
        description="teal only. auto: Triton on a GPU; on a CPU the column-skipping GEMV at batch 1 from sparsity "
        "0.5 (below, it loses to the dense product), else the masked dense product (same values, nothing saved).",
    )

    @model_validator(mode="after")
    def _kernel_for_teal(self) -> SparseOptions:
        if self.method != "teal" and self.kernel != "auto":
            raise ValueError(f"`kernel` applies to method teal, not {self.method!r}")
        return self

    def key(self) -> str:
        """The settings that change outputs, for the generation cache key."""
        return f"{self.method}@{self.sparsity:g}"
