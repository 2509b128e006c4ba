"""A tiny random Llama (3 layers, 64 wide, 96 tokens) and a stand-in tokenizer: the local engine's
whole code path in milliseconds per step, for tests that need the engine's behaviour, not a real model's text."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams

VOCAB = 96
EOS = VOCAB - 1
#: Bytes per token of the tiny model's KV in float32: 3 layers x (K, V) x 2 heads x 16 x 4 bytes.
KV_BYTES_PER_TOKEN = 3 * 2 * 2 * 16 * 4


class Tokenizer:
    eos_token_id = EOS

    def decode(self, tokens, skip_special_tokens=True):
        return " ".join(str(t) for t in tokens)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=EOS, bos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_engine(model, speculative=None, **config) -> InferenceEngine:
    """An engine over `model` (no prefix cache, 4 rows unless `config` says otherwise)."""
    settings = {"prefix_cache_bytes": 0, "max_batch_size": 4, **config}
    return InferenceEngine(model, Tokenizer(), EngineConfig(**settings), eos_ids={EOS}, speculative=speculative)


def exactly(tokens: int, **settings) -> SamplingParams:
    """`tokens` new tokens, no fewer (EOS suppressed until then)."""
    return SamplingParams(max_tokens=tokens, min_tokens=tokens, **settings)


def prompt(length: int, stride: int = 7) -> list[int]:
    return [(stride * i + 3) % (VOCAB - 1) for i in range(length)]
