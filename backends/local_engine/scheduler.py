"""Who runs this step: continuous batching at token granularity.

Sequences wait in arrival order. Every engine step, waiting sequences join the
running batch as long as there are free rows (`max_batch_size`), the KV pool
can hold the batch at its new width, and the step's prefill work stays under
`prefill_tokens` (so a flood of new prompts cannot stall running sequences for
long). A sequence leaves the batch the step it finishes; nobody waits for the
longest sequence of "its" batch, because there are no fixed batches.

When a running batch outgrows the KV memory limit, the most recently admitted
sequence is preempted: its KV goes to the prefix cache and it waits again at
the front of the queue, resuming from where it was (recomputing at most what
the prefix cache evicted meanwhile).
"""

from __future__ import annotations

from collections import deque

from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.sequence import Sequence


class Scheduler:
    """Waiting queue and running batch; running[i] always lives in KV slot i."""

    def __init__(self, max_batch_size: int, prefill_tokens: int):
        self.max_batch_size = max_batch_size
        self.prefill_tokens = prefill_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, sequences: list[Sequence]) -> None:
        self.waiting.extend(sequences)

    def requeue(self, sequence: Sequence) -> None:
        """A preempted sequence goes first, so it is not starved by later arrivals."""
        self.waiting.appendleft(sequence)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def admit(self, pool: KVPool) -> list[Sequence]:
        """Waiting sequences that join the batch this step (they still need their prefill)."""
        admitted: list[Sequence] = []
        width = max((s.kv_length + 1 for s in self.running), default=0)
        work = 0
        contexts: set[tuple[int, ...]] = set()
        while self.waiting and len(self.running) + len(admitted) < self.max_batch_size:
            candidate = self.waiting[0]
            if candidate.cancelled or candidate.future.cancelled():
                self.waiting.popleft()
                continue
            length = len(candidate.prompt_ids) + len(candidate.tokens)
            new_width = max(width, length + 1)
            if not pool.fits(len(self.running) + len(admitted) + 1, new_width):
                break
            key = (*candidate.prompt_ids, *candidate.tokens)
            cost = 0 if key in contexts else length  # identical contexts share one prefill
            if admitted and work + cost > self.prefill_tokens:
                break
            self.waiting.popleft()
            admitted.append(candidate)
            contexts.add(key)
            work += cost
            width = new_width
        return admitted

    def preemption_victim(self) -> Sequence | None:
        """The most recently admitted running sequence, if more than one runs."""
        if len(self.running) <= 1:
            return None
        return max(self.running, key=lambda s: s.admitted_at)
