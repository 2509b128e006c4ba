"""orchestra's own inference engine for local Hugging Face models.

- `engine.InferenceEngine` — the background thread that executes each step's plan:
  forwards and sampling.
- `scheduler.Scheduler` — the queues, KV slots, prefix reuse and preemption: a plan per step.
- `kv_pool.KVPool` — the running batch's KV, one compact slot per sequence.
- `prefix_cache.PrefixCache` — radix tree of KV blocks keyed by token ids, LRU under a byte limit.
- `llama_runner.LlamaRunner` — prefill/decode over a Llama-family model's modules.
- `cuda_graph_runner.CudaGraphRunner` — the static-shape decode replayed as CUDA graphs.
- `speculative` — batch-1 speculative decoding (drafters, verification, the decode loop).
- `options` — the recipe's `speculative:` and `sparse:` blocks (pydantic only).
- `sampling` — per-sequence seeded temperature / top-k / top-p sampling.
- `stopping.StopChecker` — EOS, stop strings, token limits.
- `precision` — measures whether float32 or bfloat16 prefills and decodes faster on this CPU.

The engine's names are imported on first use, so reading `options` (recipe
validation) does not load torch.
"""

import importlib

_EXPORTS = {
    "EngineConfig": "config",
    "EngineStats": "engine",
    "FinishedSequence": "sequence",
    "InferenceEngine": "engine",
    "SamplingParams": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
