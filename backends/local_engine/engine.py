"""The inference engine: continuous batching over one model, with a shared prefix cache.

A background thread owns the model and runs steps for as long as there is work.
The scheduler (`scheduler.Scheduler`, which owns the queues, the KV pool and the
prefix cache) plans each round; the engine executes the plan and hands back
what it sampled:

1. sequences submitted since the last step join the batch (as room allows),
   each with its longest cached prefix already in its slot: the engine
   prefills the rest (identical contexts once: the n samples of a prompt share
   one prefill), which gives each its first token;
2. one decode forward advances every running sequence by one token — or, when a
   sequence runs alone, a speculative round advances it by several;
3. the scheduler takes the sampled tokens: sequences that finished leave at
   once — their futures resolve, their KV goes to the prefix cache, their rows
   are reused on the next round.

Everything public is thread-safe and returns `concurrent.futures.Future`s, so
asyncio code wraps them (`asyncio.wrap_future`) and plain code blocks on them.
Cancelling a future removes its sequence from the batch at the next step.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Tokens
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner
from orchestra.backends.local_engine.options import SpeculativeOptions
from orchestra.backends.local_engine.prefix_cache import PrefixCache
from orchestra.backends.local_engine.sampling import SamplingParams, choose_tokens, sample_stream
from orchestra.backends.local_engine.scheduler import Sampled, Scheduler, StepPlan
from orchestra.backends.local_engine.sequence import FinishedSequence, Sequence
from orchestra.backends.local_engine.speculative import SpeculativeDecoder
from orchestra.backends.local_engine.speculative.draft_forwards import DraftTarget
from orchestra.backends.local_engine.stopping import StopChecker


@dataclass
class EngineStats:
    """Counters since the engine was built (or `reset_stats`)."""

    steps: int = 0  # scheduling rounds (a step that admits newcomers is two: prefill, then decode)
    decode_steps: int = 0
    decoded_rows: int = 0  # sum of batch widths over decode steps
    prefill_forwards: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0  # from the prefix cache or a sibling's prefill
    generated_tokens: int = 0
    preemptions: int = 0
    busy_seconds: float = 0.0  # wall time inside steps
    forward_seconds: float = 0.0  # of which: the model's forward passes
    decode_seconds: float = 0.0  # wall time of decode phases (forward + sampling + the step's bookkeeping)
    decode_forward_seconds: float = 0.0  # of which: the decode forward passes

    @property
    def overhead_share(self) -> float:
        """Share of decode time spent outside the forward pass (sampling, stops, scheduling)."""
        if self.decode_seconds <= 0:
            return 0.0
        return 1.0 - self.decode_forward_seconds / self.decode_seconds


class InferenceEngine:
    """Generates from a Hugging Face Llama-family model with orchestra's own decode loop."""

    def __init__(
        self,
        model,
        tokenizer,
        config: EngineConfig | None = None,
        eos_ids: set[int] | None = None,
        speculative: SpeculativeOptions | None = None,
        mlp_plugin=None,
        model_name: str | None = None,
        quantization: str = "none",
        prefill_model=None,
    ):
        """`model_name` names the model for what is stored about it on disk (a sparse draft's
        calibrated thresholds). `quantization`: none, int8, int4 or w8a8 (`quantized_linear`).
        `prefill_model`: the same weights in the precision prefill runs fastest in, where that
        is not `model`'s (`precision`); prompts are computed by it, into `model`'s KV cache."""
        self.config = config or EngineConfig()
        self.model = model
        self.runner = _make_runner(model, self.config, sparse=mlp_plugin is not None)
        self.runner.quantize(quantization)
        if prefill_model is not None and (mlp_plugin is not None or quantization != "none"):
            raise ValueError("a prefill model of its own is for dense, unquantized weights")
        #: What computes prompts: `runner`, or one over `prefill_model`.
        self.prefill_runner = self.runner if prefill_model is None else LlamaRunner(prefill_model)
        #: Sparse decode MLPs (`orchestra.kernels.sparse_mlp`); None keeps the dense path.
        self.runner.mlp_plugin = mlp_plugin
        #: Batch-1 speculative decoding (None: every step is the plain batched decode).
        self.speculative = (
            SpeculativeDecoder(speculative, DraftTarget(self.runner, tokenizer, model_name))
            if speculative is not None
            else None
        )
        if eos_ids is None:
            eos = model.generation_config.eos_token_id
            eos = eos if isinstance(eos, list) else [eos]
            eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        # A private tokenizer: a fast tokenizer shared with the caller's thread can fail
        # with "Already borrowed" when both use it at once.
        self.stops = StopChecker(copy.deepcopy(tokenizer), eos_ids)
        self.context_length = self.runner.max_positions
        self.pool = KVPool(
            layers=self.runner.num_layers,
            kv_heads=self.runner.kv_heads,
            head_dim=self.runner.head_dim,
            dtype=self.runner.dtype,
            device=self.runner.device,
            byte_limit=self.config.kv_cache_bytes,
            static_shape=getattr(self.runner, "pool_shape", None),
        )
        self.prefix_cache = PrefixCache(self.config.prefix_cache_bytes)
        lookahead = self.speculative.max_nodes if self.speculative is not None else 0
        self.scheduler = Scheduler(self.config, self.pool, self.prefix_cache, self.stops, lookahead)
        self.stats = EngineStats()
        self._eos_tensor: torch.Tensor | None = None
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._constraints = None  # a ConstraintCompiler, made by the first request with a JSON schema
        self._caller_tokenizer = tokenizer  # what `submit` (the caller's thread) indexes the vocabulary with

    # ----- public API (any thread) ---------------------------------------------------------

    def submit(
        self,
        prompt_ids: Tokens[int],
        params: SamplingParams,
        *,
        n: int = 1,
        seed: int | None = None,
        first_index: int = 0,
        listener: Callable[[tuple[int, ...]], None] | None = None,
    ) -> list[Future]:
        """Start `n` samples continuing `prompt_ids`; one future per sample.

        Sample `i` draws from a stream seeded by `(seed, first_index + i)`, so any
        sample can be regenerated alone. Without a seed, samples are fresh each time.
        A finished sequence is continued token-exactly by submitting its `context`
        (prompt + completion): its KV is still in the prefix cache, so only new tokens
        are computed. `listener` is called on the engine thread with each sample's tokens
        so far whenever a step adds to them (to stream them); it must return at once.
        A `json_schema` in `params` constrains every sample to it (`constrained`).
        """
        prompt = tuple(int(t) for t in prompt_ids)
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) >= self.context_length:
            raise ValueError(
                f"prompt is {len(prompt)} tokens; the model's context length is {self.context_length}"
            )
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        limit = min(params.max_tokens, self.context_length - len(prompt))
        sequences = [
            Sequence(
                prompt_ids=prompt,
                params=params,
                stream=sample_stream(seed, first_index + i),
                limit=limit,
                constraint=self._constraint(params),
                listener=listener,
            )
            for i in range(n)
        ]
        self._enqueue(sequences)
        return [s.future for s in sequences]

    def _constraint(self, params: SamplingParams):
        """A fresh grammar matcher for a sequence of a request with a JSON schema, else None."""
        if params.json_schema is None:
            return None
        if self._constraints is None:  # xgrammar is imported (and the vocabulary indexed) on first use
            from orchestra.backends.local_engine.constrained import ConstraintCompiler

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._constraints = ConstraintCompiler(self._caller_tokenizer, vocab, set(self.stops.eos_ids))
        return self._constraints.constraint(json.loads(params.json_schema))

    def generate(self, prompt_ids: Tokens[int], params: SamplingParams, **sampling) -> list[FinishedSequence]:
        """Blocking convenience over `submit`."""
        return [f.result() for f in self.submit(prompt_ids, params, **sampling)]

    @contextmanager
    def together(self) -> Iterator[None]:
        """Submissions made inside the block reach the engine thread at once, so they are
        admitted in one step and identical prompts among them share one prefill."""
        with self._wake:  # the engine thread needs this lock to take its inbox
            yield

    def close(self) -> None:
        """Stop the engine thread; work still queued fails. A later submit restarts it."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._closing = False

    def clear_prefix_cache(self) -> None:
        """Forget all cached KV (safe from any thread)."""
        self.prefix_cache.clear()

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    # ----- the engine thread -----------------------------------------------------------------

    def _enqueue(self, sequences: list[Sequence]) -> None:
        with self._wake:
            self._inbox.extend(sequences)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="orchestra-engine", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._inbox and self.scheduler.idle and not self._closing:
                    self._wake.wait()
                if self._closing:
                    self._fail_all(RuntimeError("the inference engine was closed"))
                    return
                arrived, self._inbox = self._inbox, []
            self.scheduler.add(arrived)
            try:
                with torch.inference_mode():
                    self.step()
            except Exception as error:  # a failed step fails its own sequences, not the engine
                self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        with self._wake:
            queued, self._inbox = self._inbox, []
        for sequence in [*self.scheduler.abort(), *queued]:
            _settle(sequence.future, error=error)

    def step(self) -> None:
        """One scheduling round: the scheduler plans, the engine runs the forwards and samples,
        the scheduler takes the tokens (and retires whoever finished). A round admits and
        prefills, or decodes (see `scheduler`)."""
        started = time.perf_counter()
        self.stats.steps += 1
        plugin = self.runner.mlp_plugin
        plan = self.scheduler.schedule(prefix_reuse=plugin is None or not plugin.needs_whole_prompt)
        for sequence, error in plan.failed:
            _settle(sequence.future, error=error)
        self.stats.preemptions += len(plan.preempted)
        output: dict[Sequence, Sampled] = {}
        speculated = False
        if plan.prefills:
            output.update(self._prefill(plan))
        decode_began = time.perf_counter()
        if plan.decode:
            speculated = self._speculates(plan)
            output.update(self._speculate(plan.decode[0]) if speculated else self._decode(plan.decode))
        finished = self.scheduler.update_from_output(plan, output)
        for sequence in output:
            if sequence.listener is not None:
                sequence.listener(tuple(sequence.tokens))
        if plan.decode:
            self.stats.decode_steps += 1
            self.stats.decoded_rows += 1 if speculated else len(plan.decode)
            self.stats.decode_seconds += time.perf_counter() - decode_began
        if speculated and finished:
            self.speculative.finish()
        for sequence, finish in finished:
            _settle(sequence.future, sequence.finished(finish.reason, finish.text))
        self.stats.busy_seconds += time.perf_counter() - started

    def _prefill(self, plan: StepPlan) -> dict[Sequence, Sampled]:
        """Compute each admitted context past its cached prefix and sample every admitted
        sequence's first token (followers share their leader's logits)."""
        self.stats.prompt_tokens_reused += plan.reused_tokens
        self.stats.prompt_tokens_computed += plan.computed_tokens

        logits_of: dict[int, torch.Tensor] = {}
        hidden_of: dict[int, torch.Tensor] = {}
        complete = [prefill for prefill in plan.prefills if not prefill.partial]  # pieces sample nothing
        sequences = [s for prefill in complete for s in prefill.sequences]
        want_hidden = any(s.params.hidden_states for s in sequences)
        for chunk in plan.chunks:
            began = time.perf_counter()
            logits, hidden = self.prefill_runner.prefill(self.pool, chunk, want_hidden)
            self.stats.forward_seconds += time.perf_counter() - began
            self.stats.prefill_forwards += 1
            for i, row in enumerate(chunk):
                logits_of[row.slot] = logits[i]
                if hidden is not None:
                    hidden_of[row.slot] = hidden[i]

        plugin = self.runner.mlp_plugin
        leader_slot: list[int] = []
        if not sequences:
            return {}
        for prefill in complete:
            state = plugin.prefilled(prefill.leader.slot) if plugin is not None else None
            for sequence in prefill.sequences:  # followers read the same context: the leader's state
                sequence.mlp_state = state
                leader_slot.append(prefill.leader.slot)
        logits = torch.stack([logits_of[slot] for slot in leader_slot])
        hidden = torch.stack([hidden_of[slot] for slot in leader_slot]) if want_hidden else None
        return self._sample(sequences, logits, hidden)

    def _decode(self, running: list[Sequence]) -> dict[Sequence, Sampled]:
        """One token for every running sequence (slot i holds running[i]).

        The step's host work is one upload (tokens and positions together) and one read
        (the sampled tokens, in `_sample`); the largest position is known on the host.
        """
        positions = [s.kv_length for s in running]
        tokens, positions_on_device = torch.tensor([[s.tokens[-1] for s in running], positions], device=self.runner.device)
        want_hidden = any(s.params.hidden_states for s in running)
        timer = _ForwardTimer(self.runner.device)
        if self.runner.mlp_plugin is not None:
            self.runner.mlp_plugin.begin_decode([s.mlp_state for s in running])
        logits, hidden = self.runner.decode(self.pool, tokens, positions_on_device, want_hidden, max(positions))
        timer.stop()
        sampled = self._sample(running, logits, hidden)
        self._count_forward(timer.seconds())  # after the sample's read: the device is done by now
        return sampled

    def _speculates(self, plan: StepPlan) -> bool:
        """Whether the lone sequence of this step gets a speculative round (room was reserved for one)."""
        lone = plan.decode[0]
        return (
            self.speculative is not None and plan.lookahead > 0 and lone.constraint is None
            and self.speculative.handles(lone.params)
        )

    def _speculate(self, sequence: Sequence) -> dict[Sequence, Sampled]:
        """A speculative round for the lone running sequence: several tokens for one target forward."""
        began = time.perf_counter()
        tokens, logprobs = self.speculative.advance(sequence, self.pool, self.stops.eos_ids, self.context_length)
        self._count_forward(time.perf_counter() - began)
        self.stats.generated_tokens += len(tokens)
        return {sequence: Sampled(tokens, logprobs)}

    def _eos_on(self, device: torch.device) -> torch.Tensor:
        """The EOS ids as a tensor on `device`, uploaded once."""
        if self._eos_tensor is None or self._eos_tensor.device != device:
            self._eos_tensor = torch.tensor(sorted(self.stops.eos_ids), device=device)
        return self._eos_tensor

    def _count_forward(self, seconds: float) -> None:
        self.stats.forward_seconds += seconds
        self.stats.decode_forward_seconds += seconds

    def _sample(
        self, sequences: list[Sequence], logits: torch.Tensor, hidden: torch.Tensor | None
    ) -> dict[Sequence, Sampled]:
        """Each sequence's next token (row i of `logits` is sequences[i]'s)."""
        early = [i for i, s in enumerate(sequences) if len(s.tokens) < s.params.min_tokens]
        if early:
            eos = self._eos_on(logits.device)
            if len(early) == len(sequences):
                logits[:, eos] = float("-inf")
            else:
                rows = torch.tensor(early, device=logits.device)
                logits[rows[:, None], eos[None, :]] = float("-inf")
        top, confidence = _top_tokens(sequences, logits)
        constrained = [(i, s.constraint) for i, s in enumerate(sequences) if s.constraint is not None]
        for i, constraint in constrained:
            constraint.mask(logits[i])
        chosen, logprobs = choose_tokens(logits, [s.params for s in sequences], [s.stream for s in sequences])
        for i, constraint in constrained:
            constraint.accept(chosen[i])
        self.stats.generated_tokens += len(sequences)
        return {
            sequence: Sampled(
                [chosen[i]],
                [logprobs[i]],
                top[i],
                hidden[i].float().cpu() if sequence.params.hidden_states and hidden is not None else None,
                confidence[i],
            )
            for i, sequence in enumerate(sequences)
        }


class _ForwardTimer:
    """How long a forward took: wall time on a CPU, CUDA events on a GPU (read once the step's
    own read has waited for the device, so timing adds no wait of its own)."""

    def __init__(self, device: torch.device):
        self._began = time.perf_counter()
        self._events = None
        if device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()

    def stop(self) -> None:
        self._ended = time.perf_counter()
        if self._events is not None:
            self._events[1].record()

    def seconds(self) -> float:
        if self._events is not None:
            return self._events[0].elapsed_time(self._events[1]) / 1000
        return self._ended - self._began


def _settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Resolve a future unless its caller cancelled it (possibly a moment ago, from another thread)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _make_runner(model, config: EngineConfig, sparse: bool = False):
    on_gpu = next(model.parameters()).device.type == "cuda"
    # Sparse MLPs re-slice weights and index on the host: not capturable, so they run eagerly.
    if not sparse and ((on_gpu and config.cuda_graphs) or config.static_shapes):
        from orchestra.backends.local_engine.cuda_graph_runner import CudaGraphRunner

        return CudaGraphRunner(model, config, use_graphs=on_gpu and config.cuda_graphs)
    return LlamaRunner(model)


def _top_tokens(
    sequences: list[Sequence], logits: torch.Tensor
) -> tuple[list[tuple[tuple[int, float], ...] | None], list[float | None]]:
    """This position's most likely tokens for each sequence that asked for them, and the token
    confidence of each sequence with a `confidence_stop` (minus the mean of its top-k log-probs;
    None for the others), both under the raw (untempered) distribution: what a verifier reads
    P("Yes") from, and how peaked the model is. One top-k over the rows that need it."""
    def confidence_k(s: Sequence) -> int:
        return s.params.confidence_stop.top_k if s.params.confidence_stop is not None else 0

    top: list[tuple[tuple[int, float], ...] | None] = [None] * len(sequences)
    confidence: list[float | None] = [None] * len(sequences)
    rows = [i for i, s in enumerate(sequences) if s.params.top_logprobs or confidence_k(s)]
    if not rows:
        return top, confidence
    widest = max(max(sequences[i].params.top_logprobs, confidence_k(sequences[i])) for i in rows)
    picked = logits if len(rows) == len(sequences) else logits[torch.tensor(rows, device=logits.device)]
    values, ids = torch.log_softmax(picked.float(), dim=-1).topk(widest, dim=-1)
    for row, row_values, row_ids in zip(rows, values.tolist(), ids.tolist()):
        params = sequences[row].params
        if params.top_logprobs:
            top[row] = tuple(zip(row_ids[: params.top_logprobs], row_values[: params.top_logprobs]))
        if params.confidence_stop is not None:
            k = params.confidence_stop.top_k
            confidence[row] = -sum(row_values[:k]) / k
    return top, confidence
