"""The `Backend` base class, the backend registry, and one loaded backend per model spec.

A backend turns a `GenerationRequest` into samples. Writing one means
subclassing `Backend` and implementing one method, `complete`; everything else
has a default that a backend overrides only where it knows better:

- `render(request)` — the text the model is fed (default: the chat template of
  `self.tokenizer` where there is one, else the messages as JSON);
- `count_tokens(text)` — its length in tokens (default: `self.tokenizer`'s count,
  else an estimate of four characters per token);
- `prepare(request)` — both at once, as a `Prompt`: done once per model call by
  `ModelHandle`, which plans the budget on the count and keys the generation
  cache on the text, then hands the same `Prompt` to `complete`;
- `prefills(request)` — how many times a call may send the prompt for its `n`
  samples (default 1: they share one prefill), so budgets reserve for all;
- `model_key`, `info`, `busy_seconds`, `aclose()`.

A backend declares its name with `@backend("name")`, what it can do in
`capabilities`, and the settings a recipe may give it in `Options`: a pydantic
model whose fields are the extra keys of the model's entry in a recipe (the
local backend's `speculative:` and `sparse:`, the openai backend's `openai:`).
`ModelSpec` validates them through the registry, so a plugin backend has
options of its own exactly as the built-ins do.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from orchestra.backends.chat_rendering import template_inputs
from orchestra.backends.generation import BackendInfo, GenerationRequest, GenerationResult
from orchestra.registry import Registry

if TYPE_CHECKING:
    from orchestra.backends.model_spec import ModelSpec


class BackendUnavailable(RuntimeError):
    """A backend cannot start here (an optional package not installed, an API key not set);
    the message says how to fix it."""


class NoOptions(BaseModel):
    """A backend without settings of its own: any extra key in its model entry is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Prompt:
    """A request's prompt as the backend will feed it, prepared once per model call."""

    #: What the model reads (chat template applied); the generation cache keys on it.
    text: str
    #: Its length in tokens; budgets are planned on it before the call.
    tokens: int
    #: The token ids, where the backend tokenizes here (the local engine feeds these).
    token_ids: tuple[int, ...] | None = None
    #: `tokens` is a rule-of-thumb guess (no tokenizer here), not a count: limits on prompt
    #: tokens cannot be enforced with it, so budgets that have them refuse the call.
    estimated: bool = False


class Backend(ABC):
    """A model that generates samples; see the module docstring for the hooks."""

    #: The name recipes use (`backend: NAME`), set by `@backend`.
    name: ClassVar[str] = ""
    #: What techniques may require of it (`LOGPROBS`, `CONTINUATION`, `HIDDEN_STATES`).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: The settings of its own a model entry may carry, validated with the recipe.
    Options: ClassVar[type[BaseModel]] = NoOptions

    #: Renders chat messages and counts tokens where set (a Hugging Face tokenizer).
    tokenizer: Any = None
    #: Wall time spent generating, for the run's time-outside-models share (0: unknown).
    busy_seconds: float = 0.0

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        #: This model's settings of the backend's own `Options` type.
        self.options = spec.options

    # ----- the one method to implement --------------------------------------------------

    @abstractmethod
    async def complete(self, request: GenerationRequest, prompt: Prompt) -> GenerationResult:
        """`request.n` samples of `prompt` (prepared from `request` by `prepare`)."""

    # ----- hooks with defaults ------------------------------------------------------------

    def load(self) -> None:
        """Load now what the first uncached generation would otherwise wait for (a local model's
        weights). Runs replayed from the cache never call it; `orchestra serve` does before it
        listens, so no client's request waits for a load and a broken model fails at start."""

    async def generate(self, request: GenerationRequest, prompt: Prompt | None = None) -> GenerationResult:
        """Samples for `request`; `prompt` is its prepared prompt when the caller already has it."""
        return await self.complete(request, prompt or self.prepare(request))

    def prepare(self, request: GenerationRequest) -> Prompt:
        text = self.render(request)
        return Prompt(text=text, tokens=self.count_tokens(text), estimated=self.estimates_tokens)

    @property
    def estimates_tokens(self) -> bool:
        """Whether `count_tokens` is the rule of thumb (no tokenizer, and not overridden)."""
        return self.tokenizer is None and type(self).count_tokens is Backend.count_tokens

    def prefills(self, request: GenerationRequest) -> int:
        """How many times the prompt may be sent (and billed) for `request`'s samples, at most."""
        return 1

    def render(self, request: GenerationRequest) -> str:
        """The text the model reads. Messages ending with an assistant turn are continued from
        that turn's text instead of opening a new turn."""
        if request.prompt is not None:
            return request.prompt
        template = getattr(self.tokenizer, "chat_template", None) if self.tokenizer is not None else None
        if template:
            messages, extra = template_inputs(request, template)  # tools as the template takes them
            continues = bool(messages) and messages[-1]["role"] == "assistant"
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=not continues, continue_final_message=continues, **extra
            )
        shown = {"messages", "tools"} if request.tools else {"messages"}
        return request.model_dump_json(include=shown)  # unambiguous, so cache keys never collide

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / 4)  # the usual rule of thumb for English BPE vocabularies

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """The prompt's length in tokens, so budgets can be checked before the call."""
        return self.prepare(request).tokens

    @classmethod
    def spec_key(cls, spec: ModelSpec, dtype: str | None = None) -> str:
        """The generation cache's name for the model `spec` describes: everything that changes
        its outputs. `dtype`: the precision `auto` resolved to, when known."""
        return f"{spec.backend}:{spec.model}:{dtype or spec.dtype}"

    @property
    def model_key(self) -> str:
        return self.spec_key(self.spec)

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"{self.spec.backend}:{self.spec.model}")

    async def aclose(self) -> None:
        """Release what a run holds (connections); the default holds nothing."""


#: Every backend class by name. The built-ins are imported only when named: the local one
#: needs torch, vLLM needs a GPU; plugins come from the `orchestra.backends` entry points.
BACKENDS: Registry[type[Backend]] = Registry(
    "backend",
    "orchestra.backends",
    lazy={
        "local": "orchestra.backends.local:LocalBackend",
        "openai": "orchestra.backends.openai_http:OpenAIBackend",
        "vllm": "orchestra.backends.vllm_offline:VLLMBackend",
        "litellm": "orchestra.backends.litellm_providers:LiteLLMBackend",
    },
)


def backend(name: str):
    """Class decorator: register a `Backend` subclass under `name`."""

    def register(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return BACKENDS.add(name, cls)

    return register


#: Keyed by the spec's JSON: one loaded model per spec per process.
_LOADED: dict[str, Backend] = {}


def get_backend(spec: ModelSpec) -> Backend:
    """The backend for `spec`, created on first use: a model is loaded once, whatever uses it."""
    key = spec.model_dump_json()
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = _LOADED[key] = BACKENDS.get(spec.backend)(spec)
    return loaded
