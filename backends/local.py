"""The local backend: a Hugging Face causal LM run by orchestra's own inference engine.

`generate` calls from many problems and nodes are handed to one
`InferenceEngine` (see `orchestra.backends.local_engine`), which decodes them
with continuous batching — a sequence joins the running batch the step after it
arrives and leaves the step it finishes — and reuses the KV of shared prefixes
from a radix-tree cache: the n samples of a prompt cost one prefill, and a
request that continues a partial answer recomputes only what is new.

The weights are loaded at the first generation the generation cache cannot
replay, not when the backend is made: a fully replayed run (the quickstart)
reads only the tokenizer and the model's shape, never the weights.

Requests made in the same event-loop tick reach the engine together, so
identical prompts asked for at once (several nodes reading one problem) are
prefilled once.

Step-wise search continues a partial answer token-exactly: a request with
`continuation_ids` is fed the prompt up to the final assistant turn and then
those ids, so its KV is found in the prefix cache. Text-level continuation
gets the same prefix reuse, up to where re-tokenization differs.

A request with a `confidence_stop` is ended by the engine mid-decode, with
finish_reason "confidence", once its sliding-window token confidence falls below
the threshold (DeepConf's online mode); its tokens are a prefix of what the same
seed and sample index give without the stop.

A request with a `thinking` budget has its thinking span bounded by the engine
(`local_engine.thinking`): closed at a maximum, "Wait" written over an early end.
A request with a `response_format` (or a `tool_choice` that forces a call) is
decoded under its JSON schema (`local_engine.constrained`); a forced call's JSON
comes back wrapped in its `<tool_call>` block. Inside a streamed request
(`orchestra.streaming`), a one-sample call sends its text as it is decoded.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.backends.base import Backend, Prompt, backend
from orchestra.backends.generation import (
    CONFIDENCE_STOP,
    CONTINUATION,
    HIDDEN_STATES,
    LOGPROBS,
    BackendInfo,
    Completion,
    GenerationRequest,
    GenerationResult,
    ThinkingBudget,
    add_logprob,
)
from orchestra.backends.local_engine import EngineConfig, FinishedSequence, InferenceEngine, SamplingParams
from orchestra.backends.local_engine.options import SparseOptions, SpeculativeOptions
from orchestra.backends.local_engine.quantized_linear import scheme as quantization_scheme
from orchestra.backends.local_engine.stopping import ConfidenceStop
from orchestra.backends.local_engine.thinking import ThinkingTokens
from orchestra.backends.model_spec import ModelSpec
from orchestra.models import load_pretrained, load_tokenizer, model_shape
from orchestra.streaming import current_listener
from orchestra.structured_output import DecodingConstraint
from orchestra.usage import Usage


@dataclass
class _Submission:
    token_ids: tuple[int, ...]
    params: SamplingParams
    request: GenerationRequest
    handed_over: asyncio.Future  # resolves to the engine's futures, one per sample
    listener: Callable[[tuple[int, ...]], None] | None = None  # streams the one sample's text


class LocalOptions(BaseModel):
    """The local backend's own settings in a model entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    speculative: SpeculativeOptions | None = Field(
        default=None, description="Batch-1 speculative decoding; lossless, see SpeculativeOptions."
    )
    sparse: SparseOptions | None = Field(
        default=None, description="Sparse-activation decode: {method: coreinfer|teal, sparsity: 0.4}."
    )
    quantization: Literal["none", "int8", "int4", "w8a8"] = Field(
        default="none",
        description="Quantization at load, CPU only. Weight-only: int8 (per-channel scales) or int4 (scales per "
        "group of 32); narrow products (decode) run torch's packed kernels, wide ones (prefill) the float BLAS "
        "over the dequantized weights. w8a8: int8 weights and activations (a scale per row, at run time), every "
        "product an integer one (fastest on CPUs with VNNI). `dtype: auto` then means float32. Changes outputs "
        "(own cache key).",
    )
    prefill_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        default=None,
        description="The precision prompts are computed in, where it should differ from `dtype` (a CPU without "
        "bf16 units prefills about 3x faster in float32 than in bfloat16, while bfloat16 may decode faster: half the "
        "bytes a token). "
        "None: `dtype`'s; under `dtype: auto` on a CPU, the precision measured fastest for prefill. The weights are "
        "held in both precisions. Changes outputs (own cache key).",
    )

    @model_validator(mode="after")
    def _not_both(self) -> LocalOptions:
        if self.prefill_dtype is not None and (self.sparse is not None or self.quantization != "none"):
            raise ValueError(
                "`prefill_dtype:` is for dense, unquantized weights (not with `sparse:` or `quantization:`)"
            )
        if self.sparse is not None and self.speculative is not None:
            raise ValueError(
                "`sparse:` and `speculative:` together are not supported (speculative verification runs "
                "the dense MLPs); for sparse self-drafting use `speculative: {method: draft_model, draft: sparse}`"
            )
        if self.sparse is not None and self.quantization != "none":
            raise ValueError("`sparse:` and `quantization:` together are not supported (the sparse MLPs slice float weights)")
        return self


@backend("local")
class LocalBackend(Backend):
    """HF transformers model in this process, on CPU or GPU."""

    capabilities = frozenset({LOGPROBS, CONTINUATION, HIDDEN_STATES, CONFIDENCE_STOP})
    Options = LocalOptions

    def __init__(self, spec: ModelSpec, engine_config: EngineConfig | None = None):
        import torch

        super().__init__(spec)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
        )
        #: The precision the weights decode in, and the one prompts are computed in (`precision`).
        self.dtype, self.prefill_dtype = self._resolve_dtypes(spec)
        # The weights wait for the first sample the cache does not hold (`engine`): a replayed run
        # needs only the tokenizer (prompts, cache keys) and the model's shape (flops, context).
        self.tokenizer = load_tokenizer(spec.model)
        self.shape = model_shape(spec.model)
        self.parameters = self.shape.parameters
        self._engine_config = engine_config or EngineConfig(max_batch_size=spec.max_batch_size)
        self._encoded: dict[str, tuple[int, ...]] = {}
        self._queue: list[_Submission] = []
        self._flush_scheduled = False

    @cached_property
    def model(self):
        """The model, loaded (a GGUF converted once, see orchestra.models) on first use."""
        model, _ = load_pretrained(self.spec.model, self.dtype)
        return model.to(self.device)

    @cached_property
    def prefill_model(self):
        """The model again in `prefill_dtype` where that differs from `dtype`; else None."""
        if self.prefill_dtype == self.dtype:
            return None
        model, _ = load_pretrained(self.spec.model, self.prefill_dtype)
        return model.to(self.device)

    @cached_property
    def engine(self) -> InferenceEngine:
        """The inference engine over `model`: built at the first generation the cache cannot replay."""
        return InferenceEngine(
            self.model,
            self.tokenizer,
            self._engine_config,
            speculative=self.options.speculative,
            mlp_plugin=self._sparse_mlp(self.spec),
            model_name=self.spec.model,
            quantization=self.options.quantization,
            prefill_model=self.prefill_model,
        )

    def load(self) -> None:
        self.engine  # noqa: B018 - building it loads the weights

    @property
    def weights_loaded(self) -> bool:
        """Whether `model` has been loaded (never, in a run the cache replays entirely)."""
        return "model" in self.__dict__

    @property
    def context_length(self) -> int | None:
        """The engine's once it is built; before, the model's metadata, which the engine reads too."""
        return self.engine.context_length if "engine" in self.__dict__ else self.shape.context_length

    def _sparse_mlp(self, spec: ModelSpec):
        """The sparse decode MLPs the spec asks for, or None (dense)."""
        options = self.options.sparse
        if options is None:
            return None
        from orchestra.kernels.sparse_mlp import build_mlp_plugin
        from orchestra.paths import teal_thresholds_folder

        return build_mlp_plugin(
            options.method, options.sparsity, self.model, self.tokenizer, spec.model, teal_thresholds_folder(), options.kernel
        )

    def _resolve_dtypes(self, spec: ModelSpec) -> tuple[str, str]:
        """(decode, prefill) precisions: the spec's, or what `auto` means here."""
        decode, prefill = self._auto_dtypes(spec) if spec.dtype == "auto" else (spec.dtype, spec.dtype)
        return decode, self.options.prefill_dtype or prefill

    def _auto_dtypes(self, spec: ModelSpec) -> tuple[str, str]:
        if self.device.type == "cuda":
            return "bfloat16", "bfloat16"
        if self.options.quantization != "none":
            return "float32", "float32"  # decode runs in the packed kernels; prefill is fastest in float32 BLAS
        pinned = os.environ.get("ORCHESTRA_AUTO_DTYPE")
        if pinned:  # what `auto` means on this machine, without measuring (tests pin float32)
            if pinned not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"ORCHESTRA_AUTO_DTYPE={pinned!r}: expected float32, bfloat16 or float16")
            return pinned, pinned
        from orchestra.backends.local_engine.precision import fastest_cpu_dtypes

        verdict = fastest_cpu_dtypes(spec.model, lambda: load_pretrained(spec.model, "float32")[0])
        if self.options.sparse is not None:  # the sparse MLPs compute prompts too: one precision for both
            return verdict.decode, verdict.decode
        return verdict.decode, verdict.prefill

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=f"local:{self.spec.model}",
            parameters=self.parameters,
            context_length=self.context_length,
        )

    @classmethod
    def spec_key(cls, spec: ModelSpec, dtype: str | None = None) -> str:
        """Speculative decoding is left out when it cannot change an output: greedy and
        `acceptance: match` give plain decoding's tokens seed for seed, so their samples are
        shared with plain runs; `acceptance: rejection` draws a different (equally distributed)
        sample for a seed, so it gets a key of its own. Sparse activation and weight quantization
        change outputs."""
        key = super().spec_key(spec, dtype)
        options: LocalOptions = spec.options  # type: ignore[assignment]
        if options.speculative is not None and options.speculative.changes_samples:
            key += f":speculative-{options.speculative.fingerprint()}"
        if options.quantization != "none":
            key += f":quantization={quantization_scheme(options.quantization)}"
        return key if options.sparse is None else f"{key}:sparse={options.sparse.key()}"

    @property
    def model_key(self) -> str:
        """The generation cache's name for this model: the spec's, with the dtype `auto` chose
        and the device it runs on (a GPU's kernels round differently from the CPU's, so its
        samples are its own). CPU keys carry no device, as they did before devices were keyed."""
        key = self.spec_key(self.spec, self.dtype)
        if self.prefill_dtype != self.dtype:  # its KV and first tokens round as prefill's precision does
            key += f":prefill={self.prefill_dtype}"
        if self.device.type == "cpu":
            return key
        return f"{key}:device={_device_name(self.device)}"

    @property
    def busy_seconds(self) -> float:
        """Wall time the engine spent computing (for the run's time-outside-models share)."""
        return self.engine.stats.busy_seconds if "engine" in self.__dict__ else 0.0

    # ----- prompts ---------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> Prompt:
        """The prompt's text and token ids (the chat template applied by `render`).

        With `continuation_ids`, the conversation before the final assistant turn is
        encoded and those ids follow it: the partial answer exactly as it was generated.
        """
        text = self.render(request)
        if request.continuation_ids is not None:
            opening = request.model_copy(
                update={"messages": request.messages[:-1], "continuation_ids": None}  # type: ignore[index]
            )
            ids = (*self._encode_text(self.render(opening)), *request.continuation_ids)
        else:
            ids = self._encode_text(text)
        return Prompt(text=text, tokens=len(ids), token_ids=ids)

    def _encode_text(self, text: str) -> tuple[int, ...]:
        ids = self._encoded.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._encoded) > 4096:
                self._encoded.clear()
            self._encoded[text] = ids
        return ids

    def _thinking_tokens(self, budget: ThinkingBudget) -> ThinkingTokens:
        """A request's thinking budget in this model's token ids; its end tag must be one token."""
        end_id = None
        if budget.end is not None:
            ids = self.tokenizer.convert_tokens_to_ids(budget.end)
            if not isinstance(ids, int) or ids == self.tokenizer.unk_token_id:
                raise ValueError(
                    f"model {self.spec.model!r}: the thinking end {budget.end!r} is not one token of its vocabulary "
                    "(a model that thinks in tags has it as a special token); `end: null` makes the whole reply the span"
                )
            end_id = ids
        if budget.close is not None:
            close = self._encode_text(budget.close)
        else:
            eos = self.engine.stops.eos_ids
            close = (end_id,) if end_id is not None else (
                self.tokenizer.eos_token_id if self.tokenizer.eos_token_id in eos else min(eos),
            )
        return ThinkingTokens(
            max_tokens=budget.max_tokens,
            min_tokens=budget.min_tokens,
            end_id=end_id,
            close_ids=close,
            wait_ids=self._encode_text(budget.wait),
        )

    # ----- generation --------------------------------------------------------------

    async def complete(self, request: GenerationRequest, prompt: Prompt) -> GenerationResult:
        return await self._run(prompt.token_ids or self._encode_text(prompt.text), request)

    def clear_prefix_cache(self) -> None:
        """Forget cached KV (e.g. to measure a cold prefill)."""
        if "engine" in self.__dict__:
            self.engine.clear_prefix_cache()

    async def _run(self, token_ids: tuple[int, ...], request: GenerationRequest) -> GenerationResult:
        limit = self.engine.context_length  # a generation the cache could not replay: load the weights now
        if len(token_ids) >= limit:
            raise ValueError(f"prompt is {len(token_ids)} tokens; the model's context length is {limit}")
        params = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            max_tokens=request.max_tokens,
            stop=request.stop,
            logprobs=request.logprobs,
            top_logprobs=request.top_logprobs,
            hidden_states=request.hidden_states,
            confidence_stop=ConfidenceStop(**request.confidence_stop.model_dump()) if request.confidence_stop else None,
            thinking=self._thinking_tokens(request.thinking) if request.thinking else None,
            json_schema=json.dumps(constraint.schema) if (constraint := DecodingConstraint.of(request)) else None,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        submission = _Submission(token_ids, params, request, loop.create_future(), self._listener(request, loop))
        self._queue.append(submission)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        futures = await submission.handed_over
        wrapped = [asyncio.wrap_future(f) for f in futures]
        try:
            finished: list[FinishedSequence] = await asyncio.gather(*wrapped)
        except BaseException:
            for future in futures:  # a cancelled or failed call frees its rows at the next step
                future.cancel()
            raise
        return self._result(token_ids, request, finished, loop.time() - started)

    def _listener(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        """For a one-sample call inside a streamed request (`orchestra.streaming`), the engine's
        token listener that sends the new text to it on the event loop; else None."""
        listening = current_listener()
        if listening is None or listening.text is None or request.n != 1:
            return None
        text = _TextStream(self.tokenizer, request.stop, listening.text)

        def on_tokens(tokens: tuple[int, ...]) -> None:  # the engine thread: hand over, return at once
            try:
                loop.call_soon_threadsafe(text.update, tokens)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

        return on_tokens

    def _flush(self) -> None:
        """Hand everything requested this tick to the engine at once."""
        queue, self._queue, self._flush_scheduled = self._queue, [], False
        with self.engine.together():
            for item in queue:
                request = item.request
                try:
                    futures = self.engine.submit(
                        item.token_ids,
                        item.params,
                        n=request.n,
                        seed=request.seed,
                        first_index=request.first_index,
                        listener=item.listener,
                    )
                except Exception as error:
                    if not item.handed_over.done():
                        item.handed_over.set_exception(error)
                    continue
                if item.handed_over.done():  # its caller went away meanwhile
                    for future in futures:
                        future.cancel()
                else:
                    item.handed_over.set_result(futures)

    def _result(
        self, token_ids: tuple[int, ...], request: GenerationRequest, finished: list[FinishedSequence], seconds: float
    ) -> GenerationResult:
        prompt_tokens = len(token_ids)
        computed_prompt = sum(f.computed_prompt_tokens for f in finished)
        completion_tokens = sum(len(f.token_ids) for f in finished)
        usage = Usage(
            calls=1,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=prompt_tokens - min(prompt_tokens, computed_prompt),
            completion_tokens=completion_tokens,
            flops=2.0 * self.parameters * (computed_prompt + completion_tokens),
            seconds=seconds,
        )
        constraint = DecodingConstraint.of(request)
        completions = tuple(
            Completion(
                text=constraint.completed(f.text) if constraint else f.text,
                completion_tokens=len(f.token_ids),
                finish_reason=f.finish_reason,
                logprobs=f.logprobs if request.logprobs else None,
                top_logprobs=self._top_texts(f.top_logprobs) if request.top_logprobs and f.top_logprobs else None,
                token_ids=f.token_ids,
                hidden_states=tuple(tuple(row) for row in f.hidden_states.tolist())
                if request.hidden_states and f.hidden_states is not None
                else None,
                stopped_by=self._stopped_by(f, request.stop),
            )
            for f in finished
        )
        return GenerationResult(completions=completions, prompt_tokens=prompt_tokens, usage=usage)

    def _stopped_by(self, finished: FinishedSequence, stop: tuple[str, ...]) -> str | None:
        """The stop string that ended the sample, as its tokens spelled it (token_ids end with them)."""
        if finished.finish_reason != "stop" or not stop or not finished.token_ids:
            return None
        if finished.token_ids[-1] in self.engine.stops.eos_ids:
            return None
        spelled = self.tokenizer.decode(finished.token_ids, skip_special_tokens=True)
        rest = spelled[len(finished.text):] if spelled.startswith(finished.text) else ""
        # the stop string and whatever its last token ran on with ("\n\n" for a "\n" stop):
        # text + stopped_by is then exactly what the token ids spell
        return rest if any(rest.startswith(s) for s in stop) else None

    def _top_texts(self, positions) -> tuple[dict[str, float], ...]:
        """Token ids -> token texts per position; ids that decode to the same text are
        merged (their probabilities added), so a verdict reads one "Yes"."""
        out = []
        for pairs in positions:
            top: dict[str, float] = {}
            for token_id, logprob in pairs:
                add_logprob(top, self.tokenizer.decode([token_id]), logprob)
            out.append(top)
        return tuple(out)

    async def aclose(self) -> None:
        """Nothing to release per run: the engine thread idles until the next request."""


def _device_name(device) -> str:
    """The accelerator's type and model (`cuda/NVIDIA H200`): kernels differ between models."""
    import torch

    if device.type == "cuda":
        return f"cuda/{torch.cuda.get_device_name(device)}"
    return device.type


class _TextStream:
    """A sample's text as its tokens arrive, sent on in new pieces. What a stop string may
    still cut, and a half-decoded character, are held back until the next tokens settle them."""

    def __init__(self, tokenizer, stop: tuple[str, ...], send: Callable[[str], None]):
        self.tokenizer, self.stop, self.send = tokenizer, stop, send
        self.held = max((len(s) for s in stop), default=1) - 1
        self.sent = ""

    def update(self, tokens: tuple[int, ...]) -> None:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop if s in text]
        if cuts:
            text = text[: min(cuts)]
        else:
            text = text[: len(text) - self.held] if self.held else text
        text = text.rstrip("\ufffd")
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.send(text[len(self.sent):])
            self.sent = text
