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
        fixed_shape: tuple[int, int] | None = None,
    ):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.byte_limit = byte_limit
        self.length_step = length_step
        element = torch.empty((), dtype=dtype).element_size()
        self.bytes_per_token = layers * 2 * kv_heads * head_dim * element
        slots, length = fixed_shape or (0, 0)
        #: A fixed-shape pool never reallocates (CUDA graphs capture its address).
        self.fixed = fixed_shape is not None
        self.storage = torch.zeros(
            (layers, 2, slots, kv_heads, length, head_dim), dtype=dtype, device=device
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
        """Whether `slots` rows of `length` tokens stay within the byte limit."""
        if self.fixed:
            return slots <= self.slots and length <= self.length
        return slots * self._round(length) * self.bytes_per_token <= self.byte_limit

    def _round(self, length: int) -> int:
        return -(-length // self.length_step) * self.length_step

    def reserve(self, slots: int, length: int) -> None:
        """Make room for `slots` rows of `length` tokens, keeping the contents of those.

        Rows and positions past the request may be dropped (the pool shrinks to fit
        its limit): the caller asks for what its live sequences occupy.
        """
        if slots <= self.slots and length <= self.length:
            return
        if not self.fits(slots, length):
            raise KVPoolFull(
                f"KV pool needs {slots} x {length} tokens "
                f"({slots * self._round(length) * self.bytes_per_token / 2**20:.0f} MiB), "
                f"limit {self.byte_limit / 2**20:.0f} MiB"
            )
        # Grow by at least half again, so a long generation reallocates O(log n) times.
        new_length = max(self.length, self._round(max(length, int(self.length * 1.5))))
        new_slots = max(self.slots, slots, min(slots * 2, slots + 16))
        while not self.fits(new_slots, new_length) and new_slots > slots:
            new_slots -= 1
        while not self.fits(new_slots, new_length) and new_length > length:
            new_length = max(self._round(length), new_length - self.length_step)
        grown = torch.zeros(
            (self.layers, 2, new_slots, self.kv_heads, new_length, self.head_dim),
            dtype=self.dtype,
            device=self.device,
        )
        keep_slots, keep_length = min(self.slots, new_slots), min(self.length, new_length)
        grown[:, :, :keep_slots, :, :keep_length] = self.storage[:, :, :keep_slots, :, :keep_length]
        self.storage = grown

    def release(self) -> None:
        """Drop the memory (when nothing runs); the next `reserve` allocates afresh."""
        if not self.fixed:
            self.storage = self.storage.new_zeros((self.layers, 2, 0, self.kv_heads, 0, self.head_dim))

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
