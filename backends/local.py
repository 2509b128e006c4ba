"""The local backend: a Hugging Face causal LM driven by orchestra's own decode loop.

Concurrent `generate` calls (many problems, many nodes) queue up; a worker
takes everything queued, up to `max_batch_size` sequences, and decodes it as one
batch in a thread, so the event loop keeps feeding it. Within a batch each
distinct prompt is prefilled once and its KV cache is shared by all samples of
that prompt. Every sequence has its own temperature, top-p, top-k, stop strings,
token limit and random stream, and leaves the batch as soon as it finishes.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import random
import time
from dataclasses import dataclass, field

from orchestra.backend import (
    CONTINUATION,
    LOGPROBS,
    BackendInfo,
    Completion,
    GenerationRequest,
    GenerationResult,
)
from orchestra.models import load_pretrained
from orchestra.recipe import ModelSpec
from orchestra.usage import Usage


@dataclass
class _Job:
    request: GenerationRequest
    prompt_ids: list[int]
    future: asyncio.Future
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Sequence:
    """One sample being decoded."""

    job: int
    rng: random.Random
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    stop: tuple[str, ...]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: int = 0  # how many most likely tokens to report per position
    top: list[dict[str, float]] = field(default_factory=list)
    finish_reason: str | None = None
    text: str | None = None


class LocalBackend:
    """HF transformers model in this process, on CPU or GPU."""

    capabilities = frozenset({LOGPROBS, CONTINUATION})

    def __init__(self, spec: ModelSpec):
        import torch

        self.spec = spec
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
        )
        dtype = spec.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.model, self.tokenizer = load_pretrained(spec.model, dtype)
        # The decode thread gets its own tokenizer: a fast (Rust) tokenizer shared by two
        # threads can fail with "Already borrowed" while the event loop encodes new prompts.
        self._decoder = copy.deepcopy(self.tokenizer)
        self.model.to(self.device)
        config = self.model.config
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.context_length = getattr(config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.eos_ids), 0)
        self.busy_seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._encoded: dict[str, list[int]] = {}

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=f"local:{self.spec.model}",
            parameters=self.parameters,
            context_length=self.context_length,
        )

    # ----- prompts ---------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        """The exact text the model is fed: chat template applied, or the raw prefix.

        Messages that end with an assistant turn are continued: the reply goes on from
        that turn's text instead of opening a new turn.
        """
        if request.prompt is not None:
            return request.prompt
        messages = [m.model_dump() for m in request.messages or ()]
        prefilled = bool(messages) and messages[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not prefilled, continue_final_message=prefilled
        )

    def _encode(self, request: GenerationRequest) -> list[int]:
        text = self.render(request)
        ids = self._encoded.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._encoded) > 4096:
                self._encoded.clear()
            self._encoded[text] = ids
        return ids

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self._encode(request))

    # ----- async front --------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        ids = self._encode(request)
        if self.context_length and len(ids) >= self.context_length:
            raise ValueError(
                f"prompt is {len(ids)} tokens; the model's context length is {self.context_length}"
            )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (e.g. a second `orchestra.run`)
            self._loop, self._pending, self._wakeup = loop, [], asyncio.Event()
            self._worker = loop.create_task(self._work())
        job = _Job(request, ids, loop.create_future())
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
                batch, rows = [], 0
                while self._pending and (not batch or rows + self._pending[0].request.n <= self.spec.max_batch_size):
                    job = self._pending.pop(0)
                    batch.append(job)
                    rows += job.request.n
                try:
                    results = await asyncio.to_thread(self._decode_batch, batch)
                except Exception as err:  # a failed batch fails its own calls, not the worker
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._loop = None

    # ----- the decode loop (runs in a worker thread) -----------------------------------

    def _decode_batch(self, jobs: list[_Job]) -> list[GenerationResult]:
        import torch

        started = time.monotonic()
        with torch.inference_mode():
            sequences, prompts, prompt_of = self._plan(jobs)
            logits, cache, mask = self._prefill(prompts)
            rows = torch.tensor(prompt_of, device=self.device)
            cache.batch_select_indices(rows)  # each sample starts from its prompt's prefilled KV
            mask, logits = mask[rows], logits[rows]
            active = list(range(len(sequences)))
            while active:
                chosen, chosen_logprobs = self._sample(logits, [sequences[i] for i in active])
                still = []
                for slot, index in enumerate(active):
                    if not self._advance(sequences[index], chosen[slot], chosen_logprobs[slot]):
                        still.append(slot)
                if not still:
                    break
                if len(still) < len(active):
                    keep = torch.tensor(still, device=self.device)
                    cache.batch_select_indices(keep)
                    mask, chosen = mask[keep], chosen[keep]
                    active = [active[s] for s in still]
                mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
                positions = (mask.sum(dim=1, keepdim=True) - 1)
                out = self.model(
                    input_ids=chosen[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :].float()
        elapsed = time.monotonic() - started
        self.busy_seconds += elapsed
        return self._results(jobs, sequences)

    def _plan(self, jobs: list[_Job]):
        """One sequence per sample, the distinct prompts, and which prompt each sequence extends."""
        sequences: list[_Sequence] = []
        prompt_rows: dict[tuple[int, ...], int] = {}
        prompt_of: list[int] = []
        for j, job in enumerate(jobs):
            request = job.request
            key = tuple(job.prompt_ids)
            row = prompt_rows.setdefault(key, len(prompt_rows))
            limit = request.max_tokens
            if self.context_length:
                limit = min(limit, self.context_length - len(key))
            seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(8), "little")
            for i in range(request.n):
                sequences.append(
                    _Sequence(
                        job=j,
                        rng=random.Random(f"{seed}:{request.first_index + i}"),
                        temperature=request.temperature,
                        top_p=request.top_p,
                        top_k=request.top_k,
                        max_tokens=limit,
                        stop=request.stop,
                        top_logprobs=request.top_logprobs,
                    )
                )
                prompt_of.append(row)
        return sequences, list(prompt_rows), prompt_of

    def _prefill(self, prompts: list[tuple[int, ...]]):
        """Left-padded prefill of the distinct prompts; returns last logits, KV cache, mask."""
        import torch
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float(), out.past_key_values, mask

    def _sample(self, logits, sequences: list[_Sequence]):
        """Next token per row under that row's own settings and random stream."""
        import torch

        raw_logprobs = torch.log_softmax(logits, dim=-1)
        self._record_top_logprobs(raw_logprobs, sequences)
        temperatures = torch.tensor([s.temperature for s in sequences], device=logits.device)
        greedy = temperatures == 0
        chosen = logits.argmax(dim=-1)
        if not bool(greedy.all()):
            scaled = logits / temperatures.clamp(min=1e-5)[:, None]
            if any(s.top_k > 0 or s.top_p < 1.0 for s in sequences):
                scaled = self._truncate(scaled, sequences)
            probs = torch.softmax(scaled, dim=-1)
            cdf = probs.cumsum(dim=-1)
            draws = torch.tensor([s.rng.random() for s in sequences], device=logits.device)
            sampled = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).squeeze(1)
            sampled = sampled.clamp(max=logits.shape[-1] - 1)
            chosen = torch.where(greedy, chosen, sampled)
        chosen_logprobs = raw_logprobs.gather(1, chosen[:, None]).squeeze(1)
        return chosen, chosen_logprobs.tolist()

    def _record_top_logprobs(self, raw_logprobs, sequences: list[_Sequence]) -> None:
        """Append this position's most likely tokens to each sequence that asked for them;
        tokens that decode to the same text are merged (their probabilities added)."""
        widest = max(s.top_logprobs for s in sequences)
        if not widest:
            return
        values, ids = raw_logprobs.topk(widest, dim=-1)
        values, ids = values.tolist(), ids.tolist()
        for row, seq in enumerate(sequences):
            if not seq.top_logprobs:
                continue
            top: dict[str, float] = {}
            for token_id, logprob in zip(ids[row][: seq.top_logprobs], values[row][: seq.top_logprobs]):
                text = self._decoder.decode([token_id])
                if text in top:  # log(exp(a) + exp(b)), without underflow
                    a = top[text]
                    logprob = max(a, logprob) + math.log1p(math.exp(-abs(a - logprob)))
                top[text] = logprob
            seq.top.append(top)

    @staticmethod
    def _truncate(scaled, sequences: list[_Sequence]):
        """Top-k then top-p (nucleus) masking, vectorised over rows with per-row settings."""
        import torch

        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        rank = torch.arange(scaled.shape[-1], device=scaled.device)[None, :]
        top_k = torch.tensor([s.top_k or scaled.shape[-1] for s in sequences], device=scaled.device)
        drop = rank >= top_k[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
        top_p = torch.tensor([s.top_p for s in sequences], device=scaled.device)
        sorted_logits = sorted_logits.masked_fill(before >= top_p[:, None], float("-inf"))
        return torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)

    def _advance(self, seq: _Sequence, token, logprob: float) -> bool:
        """Append a token; return True when the sequence has finished."""
        token = int(token)
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        if token in self.eos_ids:
            seq.finish_reason = "stop"
            seq.text = self._decoder.decode(seq.tokens[:-1], skip_special_tokens=True)
            return True
        if seq.stop:
            window = max(len(s) for s in seq.stop) + 16
            tail = self._decoder.decode(seq.tokens[-window:], skip_special_tokens=True)
            if any(s in tail for s in seq.stop):
                text = self._decoder.decode(seq.tokens, skip_special_tokens=True)
                cut = min(text.find(s) for s in seq.stop if s in text)
                seq.finish_reason, seq.text = "stop", text[:cut]
                return True
        if len(seq.tokens) >= seq.max_tokens:
            seq.finish_reason = "length"
            seq.text = self._decoder.decode(seq.tokens, skip_special_tokens=True)
            return True
        return False

    def _results(self, jobs: list[_Job], sequences: list[_Sequence]):
        results, prefilled = [], set()
        now = time.monotonic()
        for j, job in enumerate(jobs):
            own = [s for s in sequences if s.job == j]
            key = tuple(job.prompt_ids)
            shared_prefill = key in prefilled
            prefilled.add(key)
            prompt_tokens = len(job.prompt_ids)
            completion_tokens = sum(len(s.tokens) for s in own)
            computed = completion_tokens + (0 if shared_prefill else prompt_tokens)
            usage = Usage(
                calls=1,
                prompt_tokens=prompt_tokens,
                cached_prompt_tokens=prompt_tokens if shared_prefill else 0,
                completion_tokens=completion_tokens,
                flops=2.0 * self.parameters * computed,
                seconds=now - job.submitted,
            )
            completions = tuple(
                Completion(
                    text=s.text or "",
                    completion_tokens=len(s.tokens),
                    finish_reason=s.finish_reason or "length",
                    logprobs=tuple(s.logprobs) if job.request.logprobs else None,
                    top_logprobs=tuple(s.top) if job.request.top_logprobs else None,
                )
                for s in own
            )
            results.append(GenerationResult(completions=completions, prompt_tokens=prompt_tokens, usage=usage))
        return results
