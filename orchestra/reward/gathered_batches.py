"""One forward pass for many concurrent callers: requests gathered while the event loop turns.

A step-wise search scores all its particles at once (`asyncio.gather`), and the
executor runs several problems at a time; each call alone would be a batch of
one on the device. `GatheredBatches` holds each request until the running
coroutines have had their turn, then runs everything that arrived in one call
of `run` (in a worker thread, so the event loop keeps going), up to `size`
items at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GatheredBatches(Generic[Item, Result]):
    """`await batches.submit(item)` -> `run([..., item, ...])[its index]`, with concurrent items in one call."""

    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self._run, self._size = run, size
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining = False
        #: The event loop the state above belongs to: a model outlives a run's loop, and a loop
        #: that ended mid-batch must not leave the next one waiting behind it.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._draining = loop, [], False
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def submit_all(self, items: Sequence[Item]) -> list[Result]:
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    async def _drain(self) -> None:
        """Run batches until no request waits; one batch on the device at a time."""
        try:
            await asyncio.sleep(0)  # let the other callers of this turn add their items
            while self._waiting:
                batch, self._waiting = self._waiting[: self._size], self._waiting[self._size :]
                try:
                    results = await asyncio.to_thread(self._run, [item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
                except Exception as error:  # noqa: BLE001 - every caller of the batch sees the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False
