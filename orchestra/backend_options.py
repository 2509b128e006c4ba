"""Settings only one backend reads: where the servers are (`openai`), how vLLM is built (`vllm`),
how the local engine speculates (`speculative`) and sparsifies its MLPs (`sparse`).

They live in the core beside `ModelSpec`, not in the backends, so a recipe is
validated as a whole — a typo in an endpoint, a negative timeout — before
anything runs, without importing a backend or having vLLM installed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.backends.local_engine.options import SparseOptions, SpeculativeOptions

__all__ = ["OpenAIOptions", "SparseOptions", "SpeculativeOptions", "VLLMOptions"]


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
