"""Who runs next, and where their KV lives: continuous batching at token granularity.

The scheduler owns the waiting queue, the running batch, the batch's KV pool and
the prefix cache. Each round it returns a `StepPlan`; the engine executes it
(runs the forwards, samples) and hands back what it sampled through
`update_from_output`, which appends the tokens, finishes the sequences that
stopped and frees their rows. Nothing else changes the queues or decides where
a sequence's KV goes.

An engine step is one or two rounds:

1. admission: sequences whose callers went away leave; waiting sequences join
   as long as there are free rows (`max_batch_size`), the pool can hold the
   batch at its new width, and the prefill work stays under `prefill_tokens` (so
   a flood of new prompts cannot stall running sequences for long). Each copies
   its longest cached prefix into its slot and prefills only the rest; identical
   contexts admitted together are prefilled once and copied to the others (the
   n samples of a prompt). The prefill gives each its first token. A prompt
   longer than `prefill_tokens` admitted while others decode is prefilled in
   pieces (chunked prefill): one piece per round, each parked in the prefix
   cache and the sequence put back at the front of the queue, so the running
   sequences decode a token between pieces instead of waiting for the whole
   prompt. (Were the cache to evict a parked piece, the sequence prefills all
   the rest in one go, so it always progresses.);
2. decode: every running sequence — those just admitted too — advances by one
   token. Its row grows by a position, and when the pool would outgrow its
   memory limit the most recently admitted sequence is preempted: its KV goes
   to the prefix cache and it waits again at the front of the queue, resuming
   where it was (recomputing at most what the prefix cache evicted meanwhile).
   A sequence running alone with nobody waiting gets room for a speculative
   round (`lookahead` positions), if the engine speculates.

When nobody can join, the step is the decode round alone. A sequence leaves the
batch the round it finishes; nobody waits for the longest sequence of "its"
batch, because there are no fixed batches.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.kv_pool import KVPool, KVPoolFull
from orchestra.backends.local_engine.llama_runner import PrefillRow
from orchestra.backends.local_engine.prefix_cache import PrefixCache
from orchestra.backends.local_engine.sequence import Sequence
from orchestra.backends.local_engine.stopping import Finish, StopChecker


@dataclass(frozen=True)
class Prefill:
    """Admitted sequences with one context: the first (the leader) computes it, the others copy its KV."""

    sequences: tuple[Sequence, ...]
    #: What the forward computes: the leader's slot, from the end of the cached prefix (already in the slot) on.
    row: PrefillRow
    #: A piece of a long prompt (chunked prefill): its KV is parked in the prefix cache, nobody samples.
    partial: bool = False
    #: How much of the cached prefix the leader's own earlier pieces computed (not reuse).
    own_prefix: int = 0

    @property
    def leader(self) -> Sequence:
        return self.sequences[0]

    @property
    def context_length(self) -> int:
        return self.row.start + len(self.row.tokens)


@dataclass
class StepPlan:
    """One scheduling round: who prefills (and which tokens), who decodes, who was preempted or failed."""

    #: Sequences admitted this round; they take the slots after the running ones.
    prefills: list[Prefill] = field(default_factory=list)
    #: The prefills' rows, grouped into forwards of at most `prefill_tokens` tokens.
    chunks: list[list[PrefillRow]] = field(default_factory=list)
    #: Running sequences that decode one token, in slot order (slot i holds decode[i]).
    decode: list[Sequence] = field(default_factory=list)
    #: KV positions reserved past the lone decoding sequence for a speculative round (0: none).
    lookahead: int = 0
    #: Sequences sent back to the queue to free memory (their KV went to the prefix cache).
    preempted: list[Sequence] = field(default_factory=list)
    #: Sequences that can never run, with the error their callers get.
    failed: list[tuple[Sequence, Exception]] = field(default_factory=list)

    @property
    def computed_tokens(self) -> int:
        """Prompt tokens the prefill forwards compute."""
        return sum(len(prefill.row.tokens) for prefill in self.prefills)

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens taken from the prefix cache or from a sibling's prefill."""
        return sum(
            p.row.start - p.own_prefix + (0 if p.partial else (len(p.sequences) - 1) * p.context_length)
            for p in self.prefills
        )


@dataclass
class Sampled:
    """What the engine produced for one sequence of the plan: its next tokens (several after a
    speculative round), their raw log-probabilities and, when asked for, the extras of a single token."""

    tokens: list[int]
    logprobs: list[float]
    top: tuple[tuple[int, float], ...] | None = None
    hidden: torch.Tensor | None = None
    confidence: float | None = None  # for a sequence with a `confidence_stop`


class Scheduler:
    """Waiting queue, running batch and their KV; running[i] always lives in KV slot i."""

    def __init__(
        self, config: EngineConfig, pool: KVPool, prefix_cache: PrefixCache, stops: StopChecker, lookahead: int = 0
    ):
        self.max_batch_size = config.max_batch_size
        self.prefill_tokens = config.prefill_tokens
        self.cache_finished = config.cache_finished
        self.pool = pool
        self.prefix_cache = prefix_cache
        self.stops = stops
        #: Most KV positions a speculative round writes past a sequence's end (0: the engine does not speculate).
        self.lookahead = lookahead
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._rounds = 0
        self._decode_next = False  # a prefill round is followed by a decode round

    def add(self, sequences: list[Sequence]) -> None:
        self.waiting.extend(sequences)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    # ----- planning ----------------------------------------------------------------------------

    def schedule(self, prefix_reuse: bool = True) -> StepPlan:
        """The next round's plan: admit and prefill newcomers, or — when none can join, and always
        right after a prefill round — decode every running sequence. `prefix_reuse=False` prefills
        every prompt token (an MLP plugin that must see the whole prompt, such as core neurons)."""
        self._rounds += 1
        plan = StepPlan()
        if not self._decode_next:
            self._free([s for s in self.running if s.future.cancelled()])
            if any(s.future.cancelled() for s in self.waiting):
                self.waiting = deque(s for s in self.waiting if not s.future.cancelled())
            admitted = self._admit()
            if admitted:
                plan.prefills = self._place(admitted, prefix_reuse)
                plan.chunks = self._chunks([prefill.row for prefill in plan.prefills])
                self._decode_next = True
                return plan
            if not self.running and self.waiting:
                head = self.waiting.popleft()  # cannot fit even alone
                plan.failed.append((head, KVPoolFull(
                    f"a {len(head.context)}-token sequence does not fit the KV cache limit "
                    f"({self.pool.byte_limit / 2**20:.0f} MiB); raise kv_cache_bytes"
                )))
        self._decode_next = False
        plan.preempted = self._reserve_decode()
        plan.decode = list(self.running)
        if self.lookahead and len(plan.decode) == 1 and not self.waiting:
            plan.lookahead = self._reserve_lookahead(plan.decode[0])
        return plan

    def _reserve_decode(self) -> list[Sequence]:
        """Grow every running row by a position, preempting the newest sequences while memory says no."""
        preempted = []
        while self.running:
            try:
                self.pool.reserve(len(self.running), max(s.kv_length for s in self.running) + 1)
                return preempted
            except KVPoolFull:
                if len(self.running) == 1:
                    raise
                victim = max(self.running, key=lambda s: s.admitted_at)
                self._remember(victim)
                self._free([victim])
                victim.kv_length = 0
                self.waiting.appendleft(victim)  # first again, so later arrivals cannot starve it
                preempted.append(victim)
        return preempted

    def _admit(self) -> list[Sequence]:
        """Waiting sequences that join the batch this step (they still need their prefill)."""
        admitted: list[Sequence] = []
        width = max((s.kv_length + 1 for s in self.running), default=0)
        work = 0
        contexts: set[tuple[int, ...]] = set()
        while self.waiting and len(self.running) + len(admitted) < self.max_batch_size:
            candidate = self.waiting[0]
            length = len(candidate.prompt_ids) + len(candidate.tokens)
            new_width = max(width, length + 1)
            if not self.pool.fits(len(self.running) + len(admitted) + 1, new_width):
                break
            key = tuple(candidate.context)
            cost = 0 if key in contexts else length  # identical contexts share one prefill
            if admitted and cost and work + cost > self.prefill_tokens:
                break
            self.waiting.popleft()
            admitted.append(candidate)
            contexts.add(key)
            work += cost
            width = new_width
        return admitted

    def _place(self, admitted: list[Sequence], prefix_reuse: bool) -> list[Prefill]:
        """Give the admitted sequences slots after the running ones (leaders first), and find
        each context's cached prefix."""
        groups: dict[tuple[int, ...], list[Sequence]] = {}
        for sequence in admitted:
            groups.setdefault(tuple(sequence.context), []).append(sequence)
        leaders = [group[0] for group in groups.values()]
        followers = [s for group in groups.values() for s in group[1:]]
        decoding = len(self.running)
        decoding_width = max((s.kv_length + 1 for s in self.running), default=0)
        for offset, sequence in enumerate([*leaders, *followers], start=len(self.running)):
            sequence.slot = offset
            sequence.admitted_at = self._rounds
        self.running.extend([*leaders, *followers])
        self.pool.reserve(len(self.running), max(decoding_width, *(len(context) for context in groups)))

        prefills = []
        for context, group in groups.items():
            leader = group[0]
            # At least the last token is computed: its logits pick the first new token.
            found = self.prefix_cache.match(context, limit=len(context) - 1 if prefix_reuse else 0)
            own_prefix = min(found.length, leader.parked_length)
            if not leader.prefilled and not leader.parked_length:
                leader.computed_prompt_tokens = max(0, len(leader.prompt_ids) - found.length)
            position = 0
            for block in found.blocks:  # the cached prefix goes into the slot; the forward computes the rest
                self.pool.write(leader.slot, position, block)
                position += block.shape[3]
            # A piece only while others decode, the cache can park it, and the last piece survived there.
            end = len(context)
            if (
                decoding and prefix_reuse and self.prefix_cache.byte_limit > 0
                and found.length >= leader.parked_length and end - found.length > self.prefill_tokens
            ):
                end = found.length + self.prefill_tokens
            row = PrefillRow(leader.slot, found.length, context[found.length : end])
            prefills.append(Prefill(tuple(group), row, partial=end < len(context), own_prefix=own_prefix))
        return prefills

    def _chunks(self, rows: list[PrefillRow]) -> list[list[PrefillRow]]:
        """Rows grouped so that each forward computes at most `prefill_tokens` tokens (rows are
        packed, so a chunk costs its total length) — one long prompt never runs alone."""
        chunks: list[list[PrefillRow]] = []
        current: list[PrefillRow] = []
        size = 0
        for row in sorted(rows, key=lambda r: len(r.tokens)):
            if current and size + len(row.tokens) > self.prefill_tokens:
                chunks.append(current)
                current, size = [], 0
            current.append(row)
            size += len(row.tokens)
        if current:
            chunks.append(current)
        return chunks

    def _reserve_lookahead(self, sequence: Sequence) -> int:
        """Room for a draft tree after the lone sequence, or 0 if memory says no (it decodes plainly).
        A pool on its static allocation stays there: a round is not worth leaving the CUDA graphs."""
        needed = sequence.kv_length + self.lookahead
        if self.pool.fixed and not self.pool.fits_static(len(self.running), needed):
            return 0
        try:
            self.pool.reserve(len(self.running), needed)
        except KVPoolFull:
            return 0
        return self.lookahead

    # ----- after the step ------------------------------------------------------------------------

    def update_from_output(self, plan: StepPlan, output: dict[Sequence, Sampled]) -> list[tuple[Sequence, Finish]]:
        """Append what was sampled, finish the sequences that stopped and free their rows.

        Returns the finished sequences with how they ended, for the engine to report.
        """
        parked: list[Sequence] = []
        for prefill in plan.prefills:
            leader, length = prefill.leader, prefill.context_length
            context = tuple(leader.context[:length])
            self.prefix_cache.insert(context, lambda a, b, slot=leader.slot: self.pool.read(slot, a, b))
            if prefill.partial:  # the piece waits in the prefix cache; the group queues again
                leader.parked_length = length
                parked.extend(prefill.sequences)
                continue
            for sequence in prefill.sequences:
                self.pool.copy_slot(leader.slot, sequence.slot, length)
                sequence.prefilled, sequence.parked_length = True, 0
        if parked:
            self._free(parked)
            for sequence in reversed(parked):
                sequence.kv_length = 0
                self.waiting.appendleft(sequence)
        finished: list[tuple[Sequence, Finish]] = []
        for sequence, sampled in output.items():
            if sampled.top is not None:
                sequence.top.append(sampled.top)
            if sampled.hidden is not None:
                sequence.hidden.append(sampled.hidden)
            if sampled.confidence is not None:
                sequence.confidences.append(sampled.confidence)
            for token, logprob in zip(sampled.tokens, sampled.logprobs):
                if sequence.thinking is not None:  # a thinking bound may replace the sampled token
                    token, logprob = sequence.thinking.next_token(token, logprob, self.stops.eos_ids)
                sequence.tokens.append(token)
                sequence.logprobs.append(logprob)
                # The forward computed the KV of every token before this one (prefill: the whole
                # context; decode: the last token; a speculative round: the accepted path).
                sequence.kv_length = len(sequence.prompt_ids) + len(sequence.tokens) - 1
                finish = self.stops.check(
                    sequence.tokens, sequence.params.stop, sequence.limit,
                    sequence.params.confidence_stop, sequence.confidences,
                )
                if finish is not None:
                    finished.append((sequence, finish))
                    break
        if self.cache_finished:
            for sequence, _ in finished:
                self._remember(sequence)
        self._free([sequence for sequence, _ in finished])
        if self.idle:
            self.pool.release()  # hand the batch's KV memory back between bursts
        return finished

    def abort(self) -> list[Sequence]:
        """Empty the queue and the batch (the engine failed or closed); returns everyone."""
        everyone = [*self.running, *self.waiting]
        self.running, self.waiting = [], deque()
        self._decode_next = False
        for sequence in everyone:
            sequence.slot, sequence.kv_length = -1, 0
        self.pool.release()
        return everyone

    # ----- KV rows -------------------------------------------------------------------------------

    def _remember(self, sequence: Sequence) -> None:
        """Put a sequence's computed KV into the prefix cache."""
        if sequence.kv_length > 0:
            context = sequence.context[: sequence.kv_length]
            self.prefix_cache.insert(context, lambda a, b, slot=sequence.slot: self.pool.read(slot, a, b))

    def _free(self, gone: list[Sequence]) -> None:
        """Take sequences out of the batch; fill their rows with the last rows (no reshuffle)."""
        if not gone:
            return
        leaving = set(gone)
        alive = [s for s in self.running if s not in leaving]
        width = len(alive)
        holes = sorted(s.slot for s in gone if s.slot < width)
        movers = sorted((s for s in alive if s.slot >= width), key=lambda s: s.slot)
        for hole, sequence in zip(holes, movers):
            self.pool.copy_slot(sequence.slot, hole, sequence.kv_length)
            sequence.slot = hole
        for sequence in gone:
            sequence.slot = -1
        self.running = sorted(alive, key=lambda s: s.slot)
