"""The inference engine: continuous batching over one model, with a shared prefix cache.

A background thread owns the model, the KV pool and the prefix cache, and runs
steps for as long as there is work:

1. sequences submitted since the last step join the batch (as room allows);
   each looks up its longest cached prefix, copies that KV into its slot and
   prefills only the rest; identical contexts admitted together are prefilled
   once and copied to the others (the n samples of a prompt);
2. one decode step advances every running sequence by one token;
3. sequences that finished leave at once — their futures resolve, their KV goes
   to the prefix cache, their rows are reused on the next step.

Everything public is thread-safe and returns `concurrent.futures.Future`s, so
asyncio code wraps them (`asyncio.wrap_future`) and plain code blocks on them.
Cancelling a future removes its sequence from the batch at the next step.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence as Tokens
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.kv_pool import KVPool, KVPoolFull
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.backends.local_engine.prefix_cache import PrefixCache
from orchestra.backends.local_engine.sampling import SamplingParams, choose_tokens, sample_stream
from orchestra.backends.local_engine.scheduler import Scheduler
from orchestra.backends.local_engine.sequence import FinishedSequence, Sequence
from orchestra.backends.local_engine.speculative_decoder import SpeculativeConfig, SpeculativeDecoder
from orchestra.backends.local_engine.stopping import Finish, StopChecker


@dataclass
class EngineStats:
    """Counters since the engine was built (or `reset_stats`)."""

    steps: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0  # sum of batch widths over decode steps
    prefill_forwards: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0  # from the prefix cache or a sibling's prefill
    generated_tokens: int = 0
    preemptions: int = 0
    busy_seconds: float = 0.0  # wall time inside steps
    forward_seconds: float = 0.0  # of which: the model's forward passes
    decode_seconds: float = 0.0  # wall time of decode phases (forward + sampling + bookkeeping)
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
        speculative: SpeculativeConfig | None = None,
        mlp_plugin=None,
    ):
        self.config = config or EngineConfig()
        self.model = model
        self.runner = _make_runner(model, self.config, sparse=mlp_plugin is not None)
        #: Sparse decode MLPs (`orchestra.kernels.sparse_mlp`); None keeps the dense path.
        self.runner.mlp_plugin = mlp_plugin
        #: Batch-1 speculative decoding (None: every step is the plain batched decode).
        self.speculative = SpeculativeDecoder(speculative, self.runner) if speculative is not None else None
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
            fixed_shape=getattr(self.runner, "pool_shape", None),
        )
        self.prefix_cache = PrefixCache(self.config.prefix_cache_bytes)
        self.scheduler = Scheduler(self.config.max_batch_size, self.config.prefill_tokens)
        self.stats = EngineStats()
        self._inbox: list[Sequence] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._step_index = 0

    # ----- public API (any thread) ---------------------------------------------------------

    def submit(
        self,
        prompt_ids: Tokens[int],
        params: SamplingParams,
        *,
        n: int = 1,
        seed: int | None = None,
        first_index: int = 0,
    ) -> list[Future]:
        """Start `n` samples continuing `prompt_ids`; one future per sample.

        Sample `i` draws from a stream seeded by `(seed, first_index + i)`, so any
        sample can be regenerated alone. Without a seed, samples are fresh each time.
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
            Sequence(prompt_ids=prompt, params=params, stream=sample_stream(seed, first_index + i), limit=limit)
            for i in range(n)
        ]
        self._enqueue(sequences)
        return [s.future for s in sequences]

    def continue_from(
        self, prompt_ids: Tokens[int], partial_ids: Tokens[int], params: SamplingParams, **sampling
    ) -> list[Future]:
        """Continue a partial completion token-exactly (step-wise search extends a step).

        The result's `prompt_ids` are prompt + partial; its `token_ids` are the new tokens.
        If the partial sequence was generated here, its KV is still in the prefix cache.
        """
        return self.submit([*prompt_ids, *partial_ids], params, **sampling)

    def fork(self, parent: FinishedSequence, params: SamplingParams, **sampling) -> list[Future]:
        """`n` continuations of a finished sequence (particles, beams): its KV is reused."""
        return self.submit(parent.context, params, **sampling)

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
            if self.scheduler.idle:
                self.pool.release()  # hand the batch's KV memory back between bursts

    def _fail_all(self, error: BaseException) -> None:
        with self._wake:
            queued, self._inbox = self._inbox, []
        everyone = [*self.scheduler.running, *self.scheduler.waiting, *queued]
        self.scheduler.running.clear()
        self.scheduler.waiting.clear()
        for sequence in everyone:
            sequence.slot, sequence.kv_length = -1, 0
            _settle(sequence.future, error=error)

    def step(self) -> None:
        """One scheduling round: admit and prefill newcomers, then decode everyone one token."""
        started = time.perf_counter()
        self._step_index += 1
        self.stats.steps += 1
        self._drop_cancelled()
        admitted = self.scheduler.admit(self.pool)
        if not admitted and not self.scheduler.running and self.scheduler.waiting:
            head = self.scheduler.waiting.popleft()  # cannot fit even alone
            _settle(
                head.future,
                error=KVPoolFull(
                    f"a {len(head.context)}-token sequence does not fit the KV cache limit "
                    f"({self.config.kv_cache_bytes / 2**20:.0f} MiB); raise kv_cache_bytes"
                ),
            )
        if admitted:
            self._prefill(admitted)
        if self.scheduler.running:
            self._decode()
        self.stats.busy_seconds += time.perf_counter() - started

    def _drop_cancelled(self) -> None:
        gone = {s for s in self.scheduler.running if s.cancelled or s.future.cancelled()}
        if gone:
            self._remove(gone)

    def _prefill(self, admitted: list[Sequence]) -> None:
        running = self.scheduler.running
        groups: dict[tuple[int, ...], list[Sequence]] = {}
        for sequence in admitted:
            groups.setdefault(tuple(sequence.context), []).append(sequence)
        leaders = [group[0] for group in groups.values()]
        followers = [s for group in groups.values() for s in group[1:]]
        base = len(running)
        for offset, sequence in enumerate([*leaders, *followers]):
            sequence.slot = base + offset
            sequence.admitted_at = self._step_index
        running.extend([*leaders, *followers])

        self._reserve(len(running), max(len(context) for context in groups))
        rows: list[PrefillRow] = []
        for leader, context in zip(leaders, groups):
            # At least the last token is computed: its logits pick the first new token.
            found = self.prefix_cache.match(context, limit=self._reusable_prefix(context))
            rows.append(PrefillRow(leader.slot, found.length, context[found.length :]))
            position = 0
            for block in found.blocks:
                self.pool.write(leader.slot, position, block)
                position += block.shape[3]
            if not leader.prefilled:
                leader.computed_prompt_tokens = max(0, len(leader.prompt_ids) - found.length)
            self.stats.prompt_tokens_reused += found.length
            self.stats.prompt_tokens_computed += len(context) - found.length

        logits_of: dict[int, torch.Tensor] = {}
        hidden_of: dict[int, torch.Tensor] = {}
        want_hidden = any(s.params.hidden_states for s in admitted)
        for chunk in self._prefill_chunks(rows):
            began = time.perf_counter()
            logits, hidden = self.runner.prefill(self.pool, chunk, want_hidden)
            self.stats.forward_seconds += time.perf_counter() - began
            self.stats.prefill_forwards += 1
            for i, row in enumerate(chunk):
                logits_of[row.slot] = logits[i]
                if hidden is not None:
                    hidden_of[row.slot] = hidden[i]

        plugin = self.runner.mlp_plugin
        if plugin is not None:
            for leader, group in zip(leaders, groups.values()):
                for sequence in group:  # followers read the same context: the leader's state
                    sequence.mlp_state = plugin.prefilled(leader.slot) if sequence is leader else leader.mlp_state
        order: list[Sequence] = []
        leader_slot: list[int] = []
        for leader, (context, group) in zip(leaders, groups.items()):
            leader.kv_length = len(context)
            leader.prefilled = True
            self.prefix_cache.insert(context, lambda a, b, slot=leader.slot: self.pool.read(slot, a, b))
            for follower in group[1:]:
                self.pool.copy_slot(leader.slot, follower.slot, len(context))
                follower.kv_length = len(context)
                follower.prefilled = True
                self.stats.prompt_tokens_reused += len(context)
            order.extend(group)
            leader_slot.extend([leader.slot] * len(group))
        logits = torch.stack([logits_of[slot] for slot in leader_slot])
        hidden = torch.stack([hidden_of[slot] for slot in leader_slot]) if want_hidden else None
        self._emit(order, logits, hidden)

    def _reusable_prefix(self, context: tuple[int, ...]) -> int:
        """Most prompt tokens taken from the prefix cache: all but the last (whose logits pick the
        first new token), or none when the MLP plugin must see the whole prompt (core neurons)."""
        plugin = self.runner.mlp_plugin
        if plugin is not None and plugin.needs_whole_prompt:
            return 0
        return len(context) - 1

    def _prefill_chunks(self, rows: list[PrefillRow]) -> list[list[PrefillRow]]:
        """Rows grouped so that each forward computes at most `prefill_tokens` tokens (rows are
        packed, so a chunk costs its total length) — one long prompt never runs alone."""
        chunks: list[list[PrefillRow]] = []
        current: list[PrefillRow] = []
        size = 0
        for row in sorted(rows, key=lambda r: len(r.tokens)):
            if current and size + len(row.tokens) > self.config.prefill_tokens:
                chunks.append(current)
                current, size = [], 0
            current.append(row)
            size += len(row.tokens)
        if current:
            chunks.append(current)
        return chunks

    def _reserve(self, slots: int, length: int) -> None:
        """Grow the pool for the batch; admission already checked that this fits."""
        self.pool.reserve(slots, length)

    def _reserve_for_decode(self) -> None:
        """Grow the pool by a position, preempting the newest sequences if memory says no."""
        while True:
            running = self.scheduler.running
            try:
                self.pool.reserve(len(running), max(s.kv_length for s in running) + 1)
                return
            except KVPoolFull:
                victim = self.scheduler.preemption_victim()
                if victim is None:
                    raise
                self._preempt(victim)

    def _preempt(self, victim: Sequence) -> None:
        self.stats.preemptions += 1
        if victim.kv_length > 0:
            self._remember(victim)
        self._remove({victim})
        victim.kv_length = 0
        self.scheduler.requeue(victim)

    def _decode(self) -> None:
        began = time.perf_counter()
        lone = self.scheduler.running[0] if len(self.scheduler.running) == 1 else None
        if (
            self.speculative is not None
            and lone is not None
            and not self.scheduler.waiting
            and self.speculative.handles(lone.params)
            and self._speculate(lone, began)
        ):
            return
        self._reserve_for_decode()  # may preempt: read the running list after it
        running = self.scheduler.running
        device = self.runner.device
        tokens = torch.tensor([s.tokens[-1] for s in running], device=device)
        positions = torch.tensor([s.kv_length for s in running], device=device)
        want_hidden = any(s.params.hidden_states for s in running)
        forward_began = time.perf_counter()
        if self.runner.mlp_plugin is not None:
            self.runner.mlp_plugin.begin_decode([s.mlp_state for s in running])
        logits, hidden = self.runner.decode(self.pool, tokens, positions, want_hidden)
        if logits.is_cuda:
            torch.cuda.synchronize()
        forward = time.perf_counter() - forward_began
        for sequence in running:
            sequence.kv_length += 1
        self._emit(list(running), logits, hidden)
        self.stats.forward_seconds += forward
        self.stats.decode_forward_seconds += forward
        self.stats.decode_steps += 1
        self.stats.decoded_rows += len(running)
        self.stats.decode_seconds += time.perf_counter() - began

    def _speculate(self, sequence: Sequence, began: float) -> bool:
        """A speculative round for the lone running sequence; False if it could not run."""
        advanced = self.speculative.advance(sequence, self.pool, self.stops.eos_ids, self.context_length)
        if advanced is None:
            return False
        forward = time.perf_counter() - began
        finish: Finish | None = None
        for token, logprob in zip(*advanced):
            sequence.tokens.append(token)
            sequence.logprobs.append(logprob)
            sequence.kv_length += 1
            self.stats.generated_tokens += 1
            finish = self.stops.check(sequence.tokens, sequence.params.stop, sequence.limit)
            if finish is not None:
                break
        if finish is not None:
            self.speculative.finish()
            if self.config.cache_finished:
                self._remember(sequence)
            _settle(sequence.future, sequence.finished(finish.reason, finish.text))
            self._remove({sequence})
        self.stats.forward_seconds += forward
        self.stats.decode_forward_seconds += forward
        self.stats.decode_steps += 1
        self.stats.decoded_rows += 1
        self.stats.decode_seconds += time.perf_counter() - began
        return True

    def _emit(self, sequences: list[Sequence], logits: torch.Tensor, hidden: torch.Tensor | None) -> None:
        """Pick each sequence's next token; retire the ones that finished."""
        early = [i for i, s in enumerate(sequences) if len(s.tokens) < s.params.min_tokens]
        if early:
            eos = torch.tensor(sorted(self.stops.eos_ids), device=logits.device)
            rows = torch.tensor(early, device=logits.device)
            logits[rows[:, None], eos[None, :]] = float("-inf")
        _record_top(sequences, logits)
        chosen, logprobs = choose_tokens(logits, [s.params for s in sequences], [s.stream for s in sequences])
        self.stats.generated_tokens += len(sequences)
        finished: list[tuple[Sequence, Finish]] = []
        for i, sequence in enumerate(sequences):
            sequence.tokens.append(chosen[i])
            sequence.logprobs.append(logprobs[i])
            if sequence.params.hidden_states and hidden is not None:
                sequence.hidden.append(hidden[i].float().cpu())
            finish = self.stops.check(sequence.tokens, sequence.params.stop, sequence.limit)
            if finish is not None:
                finished.append((sequence, finish))
        if finished:
            for sequence, finish in finished:
                if self.config.cache_finished:
                    self._remember(sequence)
                _settle(sequence.future, sequence.finished(finish.reason, finish.text))
            self._remove({s for s, _ in finished})

    def _remember(self, sequence: Sequence) -> None:
        """Put a sequence's computed KV into the prefix cache."""
        context = sequence.context[: sequence.kv_length]
        self.prefix_cache.insert(context, lambda a, b, slot=sequence.slot: self.pool.read(slot, a, b))

    def _remove(self, gone: set[Sequence]) -> None:
        """Take sequences out of the batch; fill their rows with the last rows (no reshuffle)."""
        running = self.scheduler.running
        alive = [s for s in running if s not in gone]
        width = len(alive)
        holes = sorted(s.slot for s in running if s in gone and s.slot < width)
        movers = sorted((s for s in alive if s.slot >= width), key=lambda s: s.slot)
        for hole, sequence in zip(holes, movers):
            self.pool.copy_slot(sequence.slot, hole, sequence.kv_length)
            sequence.slot = hole
        for sequence in gone:
            sequence.slot = -1
        self.scheduler.running = sorted(alive, key=lambda s: s.slot)


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


def _record_top(sequences: list[Sequence], logits: torch.Tensor) -> None:
    """Append this position's most likely tokens to each sequence that asked for them,
    under the raw (untempered) distribution: what a verifier reads P("Yes") from."""
    widest = max(s.params.top_logprobs for s in sequences)
    if not widest:
        return
    values, ids = torch.log_softmax(logits.float(), dim=-1).topk(widest, dim=-1)
    values, ids = values.tolist(), ids.tolist()
    for row, sequence in enumerate(sequences):
        k = sequence.params.top_logprobs
        if k:
            sequence.top.append(tuple(zip(ids[row][:k], values[row][:k])))
