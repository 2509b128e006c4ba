"""Engine settings, with defaults sized for a laptop CPU and a ~100M-parameter model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    #: Most sequences decoded in one step.
    max_batch_size: int = 64
    #: Memory for the running batch's KV (slots x longest sequence).
    kv_cache_bytes: int = 2 << 30
    #: Memory for the shared prefix cache (radix tree of KV blocks); 0 turns it off.
    prefix_cache_bytes: int = 1 << 30
    #: Most prompt tokens prefilled in one step, so new arrivals cannot stall decoding for long: a
    #: longer prompt arriving while others decode is prefilled in pieces of this size (chunked
    #: prefill). 512 is about a second of prefill on a laptop CPU in float32.
    prefill_tokens: int = 512
    #: Store finished sequences (prompt + completion) in the prefix cache, so continuing or
    #: forking a partial answer — step-wise search — recomputes nothing.
    cache_finished: bool = True
    #: On a GPU, replay decode steps as CUDA graphs (static shapes); ignored on CPU.
    cuda_graphs: bool = True
    #: Run decode at bucketed static shapes on any device (the CUDA-graph path without
    #: capture): how that path is checked on machines without a GPU.
    static_shapes: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.kv_cache_bytes <= 0:
            raise ValueError("kv_cache_bytes must be > 0")
        if self.prefix_cache_bytes < 0:
            raise ValueError("prefix_cache_bytes must be >= 0")
        if self.prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1")
