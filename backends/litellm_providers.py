"""The `litellm` backend: Anthropic, Gemini, Bedrock, Mistral, … by LiteLLM's model names.

LiteLLM (`pip install 'orchestra[litellm]'`) translates one OpenAI-shaped call
to each provider's API and answers in OpenAI's shape. This backend is the
`openai` backend with LiteLLM in place of the HTTP exchange: the same request
bodies, budget planning and token accounting (the provider's usage; LiteLLM
counts what a provider leaves out), `n` handling, cache keys (the model name
and its `api_base`s) and retries — `EndpointPool`'s load spread, concurrency
limits and backoff, with LiteLLM's and the OpenAI client's own retries off, so
a failure is retried once, by the same rules, whatever the provider.

    models:
      claude: {backend: litellm, model: anthropic/claude-sonnet-4-5, litellm: {api_key_env: ANTHROPIC_API_KEY}}
      local: {backend: litellm, model: openai/smollm2, litellm: {endpoints: [http://127.0.0.1:8000/v1]}}

Provider credentials come from the provider's usual environment variable
(LiteLLM reads it) or `api_key_env`. LiteLLM's model price map is read from the
copy it ships (`LITELLM_LOCAL_MODEL_COST_MAP`), not fetched at import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.backends.base import BackendUnavailable, backend
from orchestra.backends.endpoint_pool import Attempt, EndpointPool, RemoteError, retry_after_seconds
from orchestra.backends.model_spec import ModelSpec
from orchestra.backends.openai_http import OpenAIBackend, OpenAIOptions

INSTALL_HINT = "pip install 'orchestra[litellm]'"
#: Body fields of OpenAI-compatible servers that LiteLLM's OpenAI route does not know: sent as they are.
_SERVER_FIELDS = ("continue_final_message", "add_generation_prompt", "thinking_token_budget")


class LiteLLMOptions(OpenAIOptions):
    """The `openai` backend's client settings, for a model reached through LiteLLM."""

    endpoints: tuple[str, ...] = Field(
        default=(),
        description="api_base URLs (an OpenAI-compatible server for `openai/NAME`, a proxy, a regional "
        "endpoint); several share the load. None: the provider's own.",
    )
    drop_params: bool = Field(
        default=True, description="Leave out settings a provider does not take (top_k, seed, n, ...) instead of failing."
    )


class LiteLLMModelOptions(BaseModel):
    """The litellm backend's own settings in a model entry: its `litellm:` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    litellm: LiteLLMOptions = Field(default_factory=LiteLLMOptions, description="Client settings (all optional).")


class LiteLLMPool(EndpointPool):
    """An `EndpointPool` whose tries go through LiteLLM: same retries, limits and load spread."""

    def __init__(self, model: str, options: LiteLLMOptions, api_key: str | None) -> None:
        super().__init__(
            options.endpoints or ("",),  # "": the provider's own endpoint
            max_concurrency=options.max_concurrency,
            timeout=options.timeout,
            retries=options.retries,
            backoff=options.backoff,
            max_backoff=options.max_backoff,
        )
        self.model, self.api_key, self.drop_params = model, api_key, options.drop_params

    def _connect(self) -> None:
        return None  # LiteLLM holds its own clients

    async def _try(self, url: str, path: str, body: dict[str, Any], expect: str | None) -> Attempt:
        import litellm
        import openai

        where = (url or f"litellm:{self.model}") + path
        arguments = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
        extra = {k: body[k] for k in _SERVER_FIELDS if k in body}
        if extra:
            arguments["extra_body"] = extra
        call = litellm.acompletion if "messages" in body else litellm.atext_completion
        try:
            response = await call(
                **arguments,
                api_base=url or None,
                # an OpenAI-compatible server without a key still needs the client to send one
                api_key=self.api_key or ("none" if url and self.model.startswith("openai/") else None),
                timeout=self.timeout,
                num_retries=0,
                max_retries=0,
                drop_params=self.drop_params,
            )
        except litellm.Timeout:
            return Attempt(failure=f"{where}: no answer within {self.timeout:g} s")
        except openai.APIConnectionError as err:  # refused, reset (a Timeout is one too, caught above)
            return Attempt(failure=f"{where}: {type(err).__name__}: {err}", refused=True)
        except Exception as err:  # noqa: BLE001 - LiteLLM's errors carry the provider's HTTP status
            status = getattr(err, "status_code", None)
            if not isinstance(status, int):
                raise
            message = str(getattr(err, "message", err))
            if _connection_failed(err):  # LiteLLM reports a refused connection as an HTTP 500
                return Attempt(failure=f"{where}: connection failed: {message}", refused=True)
            if status in (408, 429) or status >= 500:
                return Attempt(failure=f"{where}: HTTP {status}: {message}", retry_after=_retry_after(err))
            code = "context_length_exceeded" if isinstance(err, litellm.ContextWindowExceededError) else None
            raise RemoteError(status, message, where, code) from None
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        if expect is not None and not isinstance(data.get(expect), list):
            return Attempt(failure=f"{where}: a malformed answer without {expect!r}")
        return Attempt(data=data)


def _connection_failed(error: BaseException) -> bool:
    """Whether the server was never reached: an OpenAI client connection error behind LiteLLM's."""
    import openai

    seen: BaseException | None = error
    for _ in range(16):  # the chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, openai.APIConnectionError) and not isinstance(seen, openai.APITimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(error: Exception) -> float | None:
    headers = getattr(getattr(error, "response", None), "headers", None)
    return retry_after_seconds(headers.get("retry-after")) if headers is not None else None


@backend("litellm")
class LiteLLMBackend(OpenAIBackend):
    """A model of any provider LiteLLM reaches, named as LiteLLM names it (`anthropic/...`, `gemini/...`)."""

    Options = LiteLLMModelOptions

    def __init__(self, spec: ModelSpec):
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
        try:
            import litellm
        except ImportError:
            raise BackendUnavailable(f"backend 'litellm' needs LiteLLM, which is not installed: {INSTALL_HINT}") from None
        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # its notes on each new event loop are noise here
        super().__init__(spec)

    def _client_options(self) -> LiteLLMOptions:
        return self.options.litellm  # type: ignore[attr-defined]

    def _pool(self, options: OpenAIOptions, api_key: str | None) -> EndpointPool:
        assert isinstance(options, LiteLLMOptions)
        return LiteLLMPool(self.spec.model, options, api_key)

    @classmethod
    def spec_key(cls, spec: ModelSpec, dtype: str | None = None) -> str:
        """LiteLLM's model name (it names the provider) and the api_bases it is sent to."""
        endpoints = spec.options.litellm.endpoints  # type: ignore[attr-defined]
        return f"litellm:{spec.model}@{','.join(sorted(endpoints))}"
