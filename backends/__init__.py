"""Backends: what orchestra calls to generate, below the recipe layer.

The face of the package is light (no torch, no vLLM): the request and result
types, the `Backend` base class and its registry, `ModelSpec` and `get_backend`.
The backends themselves (`local`, `openai`, `vllm`) load when a spec names them.
"""

from orchestra.backends.base import BACKENDS, Backend, BackendUnavailable, NoOptions, Prompt, backend, get_backend
from orchestra.backends.generation import (
    CONFIDENCE_STOP,
    CONTINUATION,
    HIDDEN_STATES,
    LOGPROBS,
    BackendInfo,
    Completion,
    ConfidenceStop,
    GenerationRequest,
    GenerationResult,
    ThinkingBudget,
)
from orchestra.backends.model_spec import DEFAULT_MODEL, ModelSpec

__all__ = [
    "BACKENDS", "CONFIDENCE_STOP", "CONTINUATION", "DEFAULT_MODEL", "HIDDEN_STATES", "LOGPROBS", "Backend",
    "BackendInfo", "BackendUnavailable", "Completion", "ConfidenceStop", "GenerationRequest", "GenerationResult", "ModelSpec", "NoOptions",
    "Prompt", "ThinkingBudget", "backend", "get_backend",
]
