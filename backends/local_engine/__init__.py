"""orchestra's own inference engine for local Hugging Face models.

- `engine.InferenceEngine` — the background decode loop: continuous batching,
  prefix reuse, fork / continue-from-tokens.
- `scheduler.Scheduler` — who joins and leaves the running batch each step.
- `kv_pool.KVPool` — the running batch's KV, one compact slot per sequence.
- `prefix_cache.PrefixCache` — radix tree of KV blocks keyed by token ids, LRU under a byte limit.
- `llama_runner.LlamaRunner` — prefill/decode over a Llama-family model's modules.
- `cuda_graph_runner.CudaGraphRunner` — the static-shape decode replayed as CUDA graphs.
- `speculative_decoder.SpeculativeDecoder` — batch-1 speculative decoding (draft, verify with tree attention).
- `draft_forwards` — cheaper forwards a draft-model drafter runs (layer skipping, another model, plugins).
- `sampling` — per-sequence seeded temperature / top-k / top-p sampling.
- `stopping.StopChecker` — EOS, stop strings, token limits.
- `precision` — measures whether float32 or bfloat16 decodes faster on this CPU.
"""

from orchestra.backends.local_engine.config import EngineConfig
from orchestra.backends.local_engine.engine import EngineStats, InferenceEngine
from orchestra.backends.local_engine.sampling import SamplingParams
from orchestra.backends.local_engine.sequence import FinishedSequence

__all__ = ["EngineConfig", "EngineStats", "FinishedSequence", "InferenceEngine", "SamplingParams"]
