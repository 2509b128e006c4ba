"""orchestra's own inference engine for local Hugging Face models.

- `engine.InferenceEngine` — the background thread that executes each step's plan:
  forwards and sampling.
- `scheduler.Scheduler` — the queues, KV slots, prefix reuse and preemption: a plan per step.
- `kv_pool.KVPool` — the running batch's KV, one compact slot per sequence.
- `prefix_cache.PrefixCache` — radix tree of KV blocks keyed by token ids, LRU under a byte limit.
- `llama_runner.LlamaRunner` — prefill/decode over a Llama-family model's modules.
- `cuda_graph_runner.CudaGraphRunner` — the static-shape decode replayed as CUDA graphs.
- `speculative` — batch-1 speculative decoding (drafters, verification, the decode loop).
- `sampling` — per-sequence seeded temperature / top-k / top-p sampling.
- `stopping.StopChecker` — EOS, stop strings, token limits.
- `precision` — measures whether float32 or bfloat16 decodes faster on this CPU.
"""

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.engine import EngineStats, InferenceEngine
from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.sequence import FinishedSequence

__all__ = ["EngineConfig", "EngineStats", "FinishedSequence", "InferenceEngine", "SamplingParams"]
