"""The `vllm` backend: an in-process `vllm.LLM`, for a GPU machine.

vLLM is an optional extra (`pip install 'orchestra[vllm]'`), imported only
when a recipe picks this backend. Concurrent `generate` calls queue up and a
worker hands everything queued to one `LLM.generate` call (vLLM schedules the
batch itself, with continuous batching and, on by default here, prefix caching,
so the samples of one prompt share its prefill). Sample `i` of a request is a
`SamplingParams` of its own, seeded from (seed, i) as the local engine seeds
its streams, so any sample can be regenerated alone and a larger pool extends
a smaller one. Speculative decoding is `speculative_config`, passed through as
written in the recipe.

The generation cache keys a vLLM model on everything that can change its
samples: the model, the dtype, the engine seed, tensor parallelism,
`speculative_config` and every `engine_args` entry (quantization, ...). Only
memory and scheduling knobs (`gpu_memory_utilization`, `max_model_len`,
`enable_prefix_caching`) leave it alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.backends.base import Backend, BackendUnavailable, Prompt, backend
from orchestra.backends.generation import (
    CONTINUATION,
    LOGPROBS,
    BackendInfo,
    Completion,
    GenerationRequest,
    GenerationResult,
)
from orchestra.backends.model_spec import ModelSpec
from orchestra.structured_output import DecodingConstraint
from orchestra.usage import Usage

INSTALL_HINT = "pip install 'orchestra[vllm]'"


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


class VLLMModelOptions(BaseModel):
    """The vllm backend's own settings in a model entry: its `vllm:` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vllm: VLLMOptions | None = Field(default=None, description="vllm.LLM engine settings.")


@dataclass
class _Job:
    request: GenerationRequest
    prompt: str
    future: asyncio.Future
    submitted: float = field(default_factory=time.monotonic)


#: Engine settings that change how fast and in how much memory, never what is sampled.
_OUTPUT_NEUTRAL = frozenset({"model", "gpu_memory_utilization", "max_model_len", "enable_prefix_caching"})


def _engine_dtype(spec: ModelSpec) -> str:
    # float32 is ModelSpec's default for the CPU engine; on a GPU, vLLM's own choice is better.
    return spec.dtype if "dtype" in spec.model_fields_set else "auto"


def engine_arguments(spec: ModelSpec, model_path: str) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from a model spec."""
    options = spec.options.vllm or VLLMOptions()  # type: ignore[attr-defined]
    dtype = _engine_dtype(spec)
    arguments: dict[str, Any] = {
        "model": model_path,
        "dtype": dtype,
        "enable_prefix_caching": options.enable_prefix_caching,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "seed": options.seed,
    }
    if options.max_model_len is not None:
        arguments["max_model_len"] = options.max_model_len
    if options.speculative_config is not None:
        arguments["speculative_config"] = dict(options.speculative_config)
    arguments.update(options.engine_args)
    return arguments


def _model_path(name: str) -> str:
    """A known alias or .gguf becomes the safetensors folder orchestra keeps; anything else
    (a hub id, a folder) goes to vLLM as written."""
    from orchestra.models import KNOWN_MODELS, hf_folder

    if name in KNOWN_MODELS or name.endswith(".gguf"):
        return hf_folder(name)
    return name


@backend("vllm")
class VLLMBackend(Backend):
    """vLLM's offline engine in this process."""

    capabilities = frozenset({LOGPROBS, CONTINUATION})
    Options = VLLMModelOptions

    def __init__(self, spec: ModelSpec):
        try:
            import vllm
        except ImportError:
            raise BackendUnavailable(
                f"backend 'vllm' needs vLLM, which is not installed: {INSTALL_HINT} "
                "(Linux with a CUDA GPU; on a CPU-only machine use backend 'local')"
            ) from None
        super().__init__(spec)
        self._sampling_params = vllm.SamplingParams
        self.arguments = engine_arguments(spec, _model_path(spec.model))
        self.llm = vllm.LLM(**self.arguments)
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = _max_model_len(self.llm)
        self.busy_seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    @classmethod
    def spec_key(cls, spec: ModelSpec, dtype: str | None = None) -> str:
        """The model, its dtype, and a fingerprint of every engine setting that can change a
        sample (see the module docstring)."""
        arguments = engine_arguments(spec, spec.model)
        settings = {name: value for name, value in arguments.items() if name not in _OUTPUT_NEUTRAL | {"dtype"}}
        blob = json.dumps(settings, sort_keys=True, default=repr)
        return f"vllm:{spec.model}:{dtype or arguments['dtype']}:engine={hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"vllm:{self.spec.model}", context_length=self.context_length)

    def _constraint(self, request: GenerationRequest) -> dict[str, Any]:
        """vLLM's structured-output setting for a response_format or forced tool call (its
        `structured_outputs` since 0.11, `guided_decoding` before), or nothing."""
        constraint = DecodingConstraint.of(request)
        if constraint is None:
            return {}
        import vllm.sampling_params as module

        if hasattr(module, "StructuredOutputsParams"):
            return {"structured_outputs": module.StructuredOutputsParams(json=constraint.schema)}
        return {"guided_decoding": module.GuidedDecodingParams(json=constraint.schema)}

    def sampling_params(self, request: GenerationRequest) -> list[Any]:
        """One `SamplingParams` per sample, each with the seed of its own index."""
        constrained = self._constraint(request)
        return [
            self._sampling_params(
                n=1,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k if request.top_k > 0 else -1,
                max_tokens=request.max_tokens,
                stop=list(request.stop) or None,
                seed=request.sample_seed(i),
                # 0: only the sampled token's own log-probability; k: also the k most likely tokens
                logprobs=_top_wanted(request) or (0 if request.logprobs else None),
                **self._thinking(request),
                **constrained,
            )
            for i in range(request.n)
        ]

    def _thinking(self, request: GenerationRequest) -> dict[str, int]:
        """vLLM's own thinking limit (`SamplingParams.thinking_token_budget`), for a request with a budget."""
        if request.thinking is None:
            return {}
        return {"thinking_token_budget": request.thinking.server_budget(f"model {self.spec.model!r}")}

    async def complete(self, request: GenerationRequest, prompt: Prompt) -> GenerationResult:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (e.g. a second `orchestra.run`)
            self._loop, self._pending, self._wakeup = loop, [], asyncio.Event()
            self._worker = loop.create_task(self._work())
        job = _Job(request, prompt.text, loop.create_future())
        self._pending.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        return await job.future

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await asyncio.to_thread(self._generate_batch, batch)
                except Exception as err:  # a failed batch fails its own calls, not the worker
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result)

    def _generate_batch(self, jobs: list[_Job]) -> list[GenerationResult]:
        """One vLLM request per sample (prefix caching shares each prompt's prefill among them)."""
        prompts, params = [], []
        for job in jobs:
            for one in self.sampling_params(job.request):
                prompts.append(job.prompt)
                params.append(one)
        started = time.monotonic()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.busy_seconds += time.monotonic() - started
        now = time.monotonic()
        results, first = [], 0
        for job in jobs:
            results.append(self._result(job, outputs[first : first + job.request.n], now))
            first += job.request.n
        return results

    def _result(self, job: _Job, outputs: list[Any], now: float) -> GenerationResult:
        """A request's result from its samples' vLLM outputs (one each, in sample order)."""
        prompt_tokens = len(outputs[0].prompt_token_ids or ())
        completions = []
        top = _top_wanted(job.request)
        constraint = DecodingConstraint.of(job.request)
        for sample in (output.outputs[0] for output in outputs):
            token_ids = list(sample.token_ids)
            logprobs = None
            if job.request.logprobs and sample.logprobs is not None:
                logprobs = tuple(float(step[token].logprob) for step, token in zip(sample.logprobs, token_ids))
            extra: dict[str, Any] = {}
            if top and sample.logprobs is not None and "top_logprobs" in Completion.model_fields:
                extra["top_logprobs"] = tuple(self._top_map(step, top) for step in sample.logprobs)
            completions.append(
                Completion(
                    text=constraint.completed(sample.text) if constraint else sample.text,
                    completion_tokens=len(token_ids),
                    finish_reason="length" if sample.finish_reason == "length" else "stop",
                    logprobs=logprobs,
                    # vLLM's stop_reason: the stop string that matched (a token id for stop tokens)
                    stopped_by=sample.stop_reason if isinstance(getattr(sample, "stop_reason", None), str) else None,
                    **extra,
                )
            )
        completion_tokens = sum(c.completion_tokens for c in completions)
        usage = Usage(
            calls=1,
            prompt_tokens=prompt_tokens,
            # physical: what the first sample's prefill skipped (the others' copies of the
            # prompt are not counted, as the logical prompt is counted once)
            cached_prompt_tokens=int(getattr(outputs[0], "num_cached_tokens", 0) or 0),
            completion_tokens=completion_tokens,
            seconds=now - job.submitted,
        )
        return GenerationResult(completions=tuple(completions), prompt_tokens=prompt_tokens, usage=usage)

    def _top_map(self, step: dict[int, Any], k: int) -> dict[str, float]:
        """Token text -> log-probability of one position's k most likely tokens (vLLM adds
        the sampled token when it ranks lower); same-text tokens merged."""
        ranked = sorted(step.items(), key=lambda item: -float(item[1].logprob))[:k]
        merged: dict[str, float] = {}
        for token_id, entry in ranked:
            text = getattr(entry, "decoded_token", None)
            if text is None:
                text = self.tokenizer.decode([token_id])
            logprob = float(entry.logprob)
            if text in merged:  # log(exp(a) + exp(b)), without underflow
                a = merged[text]
                logprob = max(a, logprob) + math.log1p(math.exp(-abs(a - logprob)))
            merged[text] = logprob
        return merged

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._loop = None


def _top_wanted(request: GenerationRequest) -> int:
    """`GenerationRequest.top_logprobs`, where this version of the core has the field."""
    return int(getattr(request, "top_logprobs", 0) or 0)


def _max_model_len(llm: Any) -> int | None:
    """The engine's context length, where this vLLM version exposes it."""
    for path in (("llm_engine", "model_config", "max_model_len"), ("llm_engine", "vllm_config", "model_config", "max_model_len")):
        value: Any = llm
        for name in path:
            value = getattr(value, name, None)
        if isinstance(value, int):
            return value
    return None
