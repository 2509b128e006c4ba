"""`ModelSpec`: which model, on which backend, with which settings.

The fields every backend understands are declared here; any other key of a
model's entry belongs to its backend, whose `Options` model validates it (the
local backend's `speculative:` and `sparse:`, the openai backend's `openai:`,
vLLM's `vllm:`, a plugin's own). Validation goes through the backend registry,
so a recipe is checked as a whole — a typo in an endpoint, a negative timeout —
before anything runs, and errors keep their field paths
(`models.m.openai.endpoints`) for the recipe's line numbers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from orchestra.backends.base import BACKENDS, Backend

#: The model orchestra runs when a recipe names none: small enough for a laptop CPU.
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelSpec(BaseModel):
    """Which model, on which backend, with which engine settings."""

    model_config = ConfigDict(frozen=True, extra="allow")

    backend: str = Field(default="local", description="Backend name: local, openai, vllm, litellm, or a plugin's.")
    model: str = Field(
        default=DEFAULT_MODEL,
        description="A known alias (see `orchestra models`), a local HF folder, a .gguf file or a hub id.",
    )
    dtype: str = Field(
        default="auto",
        pattern="^(auto|float32|bfloat16|float16)$",
        description="auto: bfloat16 on a GPU; on a CPU whichever of float32/bfloat16 decodes faster (measured once per machine).",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
    max_batch_size: int = Field(default=64, ge=1, description="Most sequences decoded at once.")

    @model_validator(mode="wrap")
    @classmethod
    def _backend_options(cls, data: Any, handler: Any) -> ModelSpec:
        """Validate the keys that are not common fields with the backend's own `Options`.

        An unknown backend name is left for the recipe to report (with its known names);
        its extra keys are kept as written.
        """
        spec = handler(data)
        if spec.backend not in BACKENDS:
            return spec
        extra = dict(spec.model_extra or {})
        options_type = BACKENDS.get(spec.backend).Options
        try:
            parsed = options_type.model_validate(extra)
        except ValidationError as err:  # pydantic nests these under the spec's own location
            raise ValidationError.from_exception_data(
                err.title, [_named_setting(e, spec.backend, options_type) for e in err.errors()]
            ) from None
        # keep what was written, now typed: `spec.speculative` is a SpeculativeOptions
        spec.__pydantic_extra__.update({key: getattr(parsed, key) for key in extra})
        return spec

    @property
    def backend_class(self) -> type[Backend]:
        return BACKENDS.get(self.backend)

    @property
    def options(self) -> BaseModel:
        """This model's settings, as its backend's `Options` (defaults filled in)."""
        return self.backend_class.Options.model_validate(dict(self.model_extra or {}))

    def key(self, dtype: str | None = None) -> str:
        """Identity of the model for the generation cache: what changes its outputs (the
        backend decides; see `Backend.spec_key`). `dtype`: what `auto` resolved to, if known."""
        return self.backend_class.spec_key(self, dtype)


def _named_setting(error: Any, backend: str, options_type: type[BaseModel]) -> InitErrorDetails:
    """An unknown key of a model entry says whose settings were expected (`openai:` under
    backend local is a misplaced block, not a typo of a common field)."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and len(loc) == 1:
        own = ", ".join(options_type.model_fields) or "none"
        message = PydanticCustomError(
            "extra_forbidden",
            "unknown key: `{key}` is not a setting of backend '{backend}' (its own settings: {own})",
            {"key": str(loc[0]), "backend": backend, "own": own},
        )
        return InitErrorDetails(type=message, loc=loc, input=error["input"])
    details = InitErrorDetails(type=error["type"], loc=loc, input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details
