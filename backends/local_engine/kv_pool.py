"""The KV cache of the running batch: one slot (row) per live sequence, kept compact.

Layout: one tensor `[layers, 2 (key/value), slots, kv_heads, length, head_dim]`.
Running sequences always occupy slots `0 .. B-1`, so the attention of a decode
step reads `keys[:B, :, :width]` as a view — no gather, no copy per step. That
is the point of this layout on a CPU: a paged cache would have to gather every
sequence's blocks into a contiguous tensor at every layer of every step, moving
as many bytes as the weights themselves. The price is paid once per sequence
instead: a sequence that joins copies its shared prefix into its slot, and a
sequence that leaves has its hole filled by moving the last slot down.

Unused positions hold zeros, never garbage: a masked-out key still enters the
dot product before the mask applies, and NaN from uninitialised memory would
survive it.

A pool with a `static_shape` (the CUDA-graph path) lives in that one allocation
while the batch fits it, so captured steps can keep its address. A batch that
outgrows it (a long prompt) moves to a growable allocation for as long as it
must, and back to a fresh static one once it fits again; `generation` counts the
allocations, so a step captured over an earlier one knows it is stale.
"""

from __future__ import annotations

import torch


class KVPoolFull(RuntimeError):
    """The pool would outgrow its memory limit."""


class KVPool:
    """Slot-major key/value storage that grows on demand up to a byte limit."""

    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        byte_limit: int,
        length_step: int = 128,
        static_shape: tuple[int, int] | None = None,
    ):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.byte_limit = byte_limit
        self.length_step = length_step
        element = torch.empty((), dtype=dtype).element_size()
        self.bytes_per_token = layers * 2 * kv_heads * head_dim * element
        #: The (slots, length) allocation the pool keeps while the batch fits it; None: always growable.
        self.static_shape = static_shape
        #: Whether `storage` is the static allocation (only then may a CUDA graph capture its address).
        self.fixed = False
        #: Bumped at every allocation: a step captured over an older one must not replay.
        self.generation = 0
        self.storage = self._allocate(*(static_shape or (0, 0)), fixed=static_shape is not None)

    def _allocate(self, slots: int, length: int, fixed: bool) -> torch.Tensor:
        self.fixed = fixed
        self.generation += 1
        return torch.zeros(
            (self.layers, 2, slots, self.kv_heads, length, self.head_dim), dtype=self.dtype, device=self.device
        )

    @property
    def slots(self) -> int:
        return self.storage.shape[2]

    @property
    def length(self) -> int:
        return self.storage.shape[4]

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def fits(self, slots: int, length: int) -> bool:
        """Whether `slots` rows of `length` tokens fit the static shape or stay within the byte limit."""
        return self.fits_static(slots, length) or slots * self._round(length) * self.bytes_per_token <= self.byte_limit

    def fits_static(self, slots: int, length: int) -> bool:
        """Whether `slots` rows of `length` tokens fit the static allocation (False without one)."""
        return self.static_shape is not None and slots <= self.static_shape[0] and length <= self.static_shape[1]

    def _round(self, length: int) -> int:
        return -(-length // self.length_step) * self.length_step

    def reserve(self, slots: int, length: int) -> None:
        """Make room for `slots` rows of `length` tokens, keeping the contents of those.

        Rows and positions past the request may be dropped (the pool shrinks to fit
        its limit): the caller asks for what its live sequences occupy. A pool with a static
        shape returns to it as soon as the request fits it again (briefly holding both).
        """
        if self.fits_static(slots, length):
            if not self.fixed:
                self._move_to(self._allocate(*self.static_shape, fixed=True), slots, length)
            return
        if slots <= self.slots and length <= self.length:
            return
        if not self.fits(slots, length):
            raise KVPoolFull(
                f"KV pool needs {slots} x {length} tokens "
                f"({slots * self._round(length) * self.bytes_per_token / 2**20:.0f} MiB), "
                f"limit {self.byte_limit / 2**20:.0f} MiB"
            )
        # Grow by at least half again, so a long generation reallocates O(log n) times.
        # Leaving the static allocation, size for the request alone (the static shape is the limit's).
        current_slots, current_length = (0, 0) if self.fixed else (self.slots, self.length)
        new_length = max(current_length, self._round(max(length, int(current_length * 1.5))))
        new_slots = max(current_slots, slots, min(slots * 2, slots + 16))
        while not self.fits(new_slots, new_length) and new_slots > slots:
            new_slots -= 1
        while not self.fits(new_slots, new_length) and new_length > length:
            new_length = max(self._round(length), new_length - self.length_step)
        self._move_to(self._allocate(new_slots, new_length, fixed=False), new_slots, new_length)

    def _move_to(self, storage: torch.Tensor, slots: int, length: int) -> None:
        """Make `storage` the pool's, carrying over the first `slots` rows' first `length` positions."""
        keep_slots = min(self.slots, storage.shape[2], slots)
        keep_length = min(self.length, storage.shape[4], length)
        storage[:, :, :keep_slots, :, :keep_length] = self.storage[:, :, :keep_slots, :, :keep_length]
        self.storage = storage

    def release(self) -> None:
        """Drop the memory (when nothing runs); the next `reserve` allocates afresh. The static
        allocation is kept: the steps captured over it stay valid."""
        if not self.fixed:
            self.storage = self._allocate(0, 0, fixed=False)

    def keys(self, layer: int) -> torch.Tensor:
        return self.storage[layer, 0]

    def values(self, layer: int) -> torch.Tensor:
        return self.storage[layer, 1]

    def copy_slot(self, source: int, target: int, length: int) -> None:
        """Give `target` the first `length` positions of `source` (a fork, or a move)."""
        if source != target and length > 0:
            self.storage[:, :, target, :, :length] = self.storage[:, :, source, :, :length]

    def read(self, slot: int, start: int, end: int) -> torch.Tensor:
        """A copy of positions [start, end) of a slot: `[layers, 2, kv_heads, end - start, head_dim]`."""
        return self.storage[:, :, slot, :, start:end].clone()

    def write(self, slot: int, start: int, block: torch.Tensor) -> None:
        """Put a block read from a pool (or the prefix cache) at positions [start, ...)."""
        self.storage[:, :, slot, :, start : start + block.shape[3]] = block
