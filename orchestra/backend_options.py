"""Settings only one backend reads: where the servers are (`openai`), how vLLM is built (`vllm`),
how the local engine speculates (`speculative`) and sparsifies its MLPs (`sparse`).

They live in the core beside `ModelSpec`, not in the backends, so a recipe is
validated as a whole — a typo in an endpoint, a negative timeout — before
anything runs, without importing a backend or having vLLM installed.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class OpenAIOptions(BaseModel):
    """How to reach one model served by OpenAI-compatible servers (vLLM, llama.cpp, SGLang, hosted APIs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoints: tuple[str, ...] = Field(
        min_length=1,
        description="Base URLs ending before /chat/completions, e.g. http://127.0.0.1:8000/v1. "
        "Several servers of the same model share the load (each request goes to the least busy one).",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key. The key itself is never "
        "written in a recipe, a trace or a log.",
    )
    max_concurrency: int = Field(default=16, ge=1, description="Requests in flight per endpoint.")
    timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for one response.")
    retries: int = Field(
        default=5, ge=0, description="Retries of a call after 429, 5xx, a timeout or a dropped connection."
    )
    backoff: float = Field(
        default=0.5, ge=0, description="Seconds before the first retry; doubles on each retry, with jitter."
    )
    max_backoff: float = Field(default=30.0, gt=0, description="Longest wait between two tries (Retry-After included).")
    tokenizer: str | None = Field(
        default=None,
        description="A model name orchestra can load (alias, HF folder, .gguf) whose tokenizer estimates "
        "prompt tokens before a call and token counts a server leaves out. Default: `model`, when "
        "orchestra knows it; otherwise about 4 characters per token.",
    )
    parameters: int | None = Field(
        default=None, ge=1, description="Parameter count of the served model, for FLOPs estimates and budgets."
    )
    context_length: int | None = Field(
        default=None, ge=1, description="The served model's context length, if known (checked before a call)."
    )
    logprobs: bool = Field(default=True, description="Ask the server for the sampled tokens' log-probabilities.")
    continue_final_message: bool = Field(
        default=False,
        description="The server's chat endpoint continues a final assistant turn when asked "
        "(vLLM: `continue_final_message`). Continuations then go there instead of being rendered "
        "here with the model's chat template and sent to /completions.",
    )

    @field_validator("endpoints", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for url in value:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"endpoint {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
            cleaned.append(url.rstrip("/"))
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("endpoints are listed more than once")
        return tuple(cleaned)


class VLLMOptions(BaseModel):
    """How to build the in-process `vllm.LLM` engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enable_prefix_caching: bool = Field(
        default=True, description="Share the KV cache of common prompt prefixes (samples of one prompt, few-shot headers)."
    )
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1)
    speculative_config: dict[str, Any] | None = Field(
        default=None,
        description='Passed to vllm.LLM as is, e.g. {method: ngram, num_speculative_tokens: 4, prompt_lookup_max: 3} '
        'or {model: DRAFT, num_speculative_tokens: 5}.',
    )
    seed: int = 0
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Any other vllm.LLM keyword arguments, passed through."
    )

    @field_validator("engine_args")
    @classmethod
    def _no_overlap(cls, value: dict[str, Any]) -> dict[str, Any]:
        named = set(cls.model_fields) - {"engine_args"} | {"model", "dtype"}
        clash = sorted(named & set(value))
        if clash:
            raise ValueError(f"set {', '.join(clash)} with its own field, not in engine_args")
        return value


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
        import hashlib

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
