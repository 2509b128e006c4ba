"""The forward pass: a Hugging Face Llama-family model's weights, run over the KV pool.

Orchestra calls the model's pieces itself — embedding, each decoder layer's
norms, projections, rotary embedding and MLP, the final norm and LM head —
instead of the model's `forward`, because the cache layout, the attention
mask of a batch whose rows have different lengths, and which positions need
logits are the engine's business. The arithmetic is the model's own (same
rotary tables, same RMSNorm, same projections), so greedy decoding matches
`generate` in float32.

Changes of form, not of value: the q/k/v projections of each layer are
concatenated into one matrix and gate/up into another (fewer, larger matrix
products), and the model's own Linear modules are re-pointed at slices of
those matrices, so the weights are held once and the HF model stays usable.
In float32 on a CPU the matrices are also stored column-major (each weight's
transpose is contiguous): the BLAS then runs a one-row product `x @ W.T` as a
streaming pass over memory, measured 2.4x faster at batch 1 on this project's
CPU and no slower at batch 16. Values and shapes are unchanged; HF's own
forward reads the same storage, so it stays comparable token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from orchestra.backends.local_engine import fused_decode
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.quantized_linear import QuantizedWeight, linear, quantize

#: Model types whose decoder layers have the Llama structure this runner drives.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedModel(ValueError):
    """The local engine cannot drive this architecture."""


@dataclass(frozen=True)
class PrefillRow:
    """Compute KV for `tokens` at positions start, start+1, ... of `slot`."""

    slot: int
    start: int
    tokens: tuple[int, ...]


class RMSNorm:
    """A model's RMSNorm module, called through torch's fused kernel where that gives the module's
    own values: in float32 `F.rms_norm` is the same arithmetic (bit-identical, tests/test_llama_runner.py)
    in one call instead of six, and on a CPU a batch-1 decode step's time is mostly small operator
    calls (bench/results/step_profile-*.md). Other dtypes call the module: in bfloat16 the fused
    kernel rounds differently."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.eps = getattr(module, "variance_epsilon", None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.eps is None or x.dtype != torch.float32:
            return self.module(x)
        return F.rms_norm(x, (x.shape[-1],), self.module.weight, self.eps)


@dataclass
class _Layer:
    qkv: torch.Tensor | QuantizedWeight
    qkv_bias: torch.Tensor | None
    o: torch.Tensor | QuantizedWeight
    gate_up: torch.Tensor | QuantizedWeight
    down: torch.Tensor | QuantizedWeight
    input_norm: RMSNorm
    post_norm: RMSNorm
    q_norm: RMSNorm | None
    k_norm: RMSNorm | None


class LlamaRunner:
    """Prefill and decode steps over a `KVPool`, one slot per sequence."""

    def __init__(self, model: torch.nn.Module, column_major: bool | None = None):
        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModel(
                f"the local engine drives {', '.join(SUPPORTED_MODEL_TYPES)} models; "
                f"this one is {config.model_type!r}"
            )
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") in ("dynamic", "longrope"):
            raise UnsupportedModel(f"rotary type {rope['rope_type']!r} depends on sequence length; not supported")
        if getattr(config, "use_sliding_window", False) or (
            config.model_type == "mistral" and getattr(config, "sliding_window", None)
        ):
            raise UnsupportedModel("sliding-window attention is not supported by the local engine")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"activation {config.hidden_act!r} is not supported (silu only)")
        self.model = model
        inner = model.model
        self.embed = inner.embed_tokens
        self.norm = RMSNorm(inner.norm)
        self.lm_head = model.lm_head
        self.rotary = inner.rotary_emb
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.scaling = self.head_dim**-0.5
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_hidden_layers
        self.max_positions = getattr(config, "max_position_embeddings", None) or 1 << 20
        weight = self.embed.weight
        if column_major is None:
            column_major = weight.device.type == "cpu" and weight.dtype == torch.float32
        self.column_major = column_major
        self.layers = [self._fuse(layer) for layer in inner.layers]
        if column_major:
            _relayout(self.lm_head, "weight")  # tied to the embedding in many models: relaid once
        #: The LM head's weight as the forward uses it (the module's, or a quantized copy).
        self.head = self.lm_head.weight
        self.quantization = "none"
        self._cos = self._sin = None
        self._extend_rotary(min(self.max_positions, 4096))
        #: A replacement for the MLPs (sparse activation, `orchestra.kernels.sparse_mlp`); None: dense.
        self.mlp_plugin = None
        #: The quantized CPU decode step as one compiled call (`fused_decode`); None: the Python step.
        self.fused_decode = None

    def quantize(self, kind: str) -> None:
        """Hold the projections quantized (`quantized_linear`): "int8", "int4", "w8a8", or
        "none" (a no-op). The LM head is held in int8 under int4: on the default model (a Q4_1
        GGUF whose projections lie on a 4-bit grid but whose embedding does not) int4 would
        put several times int8's error into the head's weights. The embedding stays float; a tied LM
        head gets a quantized copy of its own. The HF model's modules keep the float weights."""
        if kind == "none":
            return
        if self.mlp_plugin is not None:
            raise ValueError("quantization and sparse MLPs together are not supported")
        for layer in self.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                setattr(layer, name, quantize(getattr(layer, name), kind))
        self.head = quantize(self.lm_head.weight, "int8" if kind == "int4" else kind)
        self.quantization = kind
        self.fused_decode = fused_decode.build(self)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def _fuse(self, layer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = _concatenate_into(projections, "weight", self.column_major)
        bias = _concatenate_into(projections, "bias") if attn.q_proj.bias is not None else None
        if mlp.gate_proj.bias is not None or attn.o_proj.bias is not None:
            raise UnsupportedModel("biases on the MLP or output projection are not supported")
        gate_up = _concatenate_into((mlp.gate_proj, mlp.up_proj), "weight", self.column_major)
        if self.column_major:
            _relayout(attn.o_proj, "weight")
            _relayout(mlp.down_proj, "weight")
        return _Layer(
            qkv=qkv,
            qkv_bias=bias,
            o=attn.o_proj.weight,
            gate_up=gate_up,
            down=mlp.down_proj.weight,
            input_norm=RMSNorm(layer.input_layernorm),
            post_norm=RMSNorm(layer.post_attention_layernorm),
            q_norm=RMSNorm(attn.q_norm) if getattr(attn, "q_norm", None) is not None else None,
            k_norm=RMSNorm(attn.k_norm) if getattr(attn, "k_norm", None) is not None else None,
        )

    def _extend_rotary(self, positions: int) -> None:
        """cos/sin tables for positions [0, positions), computed by the model's own rotary module."""
        positions = min(max(positions, 1), self.max_positions)
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        ids = torch.arange(positions, device=self.device)[None, :]
        with torch.inference_mode():
            cos, sin = self.rotary(probe, ids)
        self._cos, self._sin = cos[0], sin[0]

    def rotary_tables(self, highest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole cos/sin tables [positions, head_dim], extended to cover position `highest`."""
        if self._cos is None or highest >= self._cos.shape[0]:
            self._extend_rotary(max(highest + 1, 2 * (0 if self._cos is None else self._cos.shape[0])))
        return self._cos, self._sin

    def rotary_for(self, positions: torch.Tensor, highest: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.rotary_tables(highest)
        return cos[positions], sin[positions]

    # ----- the layer stack ---------------------------------------------------------------

    def _attention_inputs(self, layer: _Layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q [rows, heads, n, d], k and v [rows, kv_heads, n, d] for hidden states x [rows, n, hidden].

        q and k get their rotary embedding in one pass (they are adjacent in the fused
        projection's output): the same elementwise arithmetic, half the operator calls.
        """
        rows, n, _ = x.shape
        heads = linear(x, layer.qkv, layer.qkv_bias).view(rows, n, self.heads + 2 * self.kv_heads, self.head_dim)
        rotated = self.heads + self.kv_heads
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
        if layer.q_norm is None:
            qk = heads[:, :, :rotated]
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, :, : self.heads], qk[:, :, self.heads :]
        else:
            q, k = layer.q_norm(heads[:, :, : self.heads]), layer.k_norm(heads[:, :, self.heads : rotated])
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        v = heads[:, :, rotated:]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _mlp(self, layer: _Layer, h: torch.Tensor, index: int | None = None, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Residual + MLP. With a plugin and a layer `index`, the plugin computes the MLP
        (`slots`: each packed token's slot during prefill, None in decode)."""
        x = layer.post_norm(h)
        if self.mlp_plugin is not None and index is not None:
            return h + self.mlp_plugin(index, x, layer.gate_up, layer.down, slots)
        gate, up = linear(x, layer.gate_up).chunk(2, dim=-1)
        return h + linear(F.silu(gate) * up, layer.down)

    def _finish(self, h: torch.Tensor, want_hidden: bool):
        h = self.norm(h)
        logits = linear(h, self.head, self.lm_head.bias).float()
        return logits, (h if want_hidden else None)

    def prefill(self, pool: KVPool, rows: list[PrefillRow], want_hidden: bool = False):
        """KV for each row's tokens into its slot; logits (and hidden) at each row's last token.

        The rows' tokens are packed into one sequence for the projections and MLPs
        (which dominate prefill on a CPU), so a short prompt batched with a long one
        costs no padding there; only attention — each row against its own slot —
        runs on a padded [rows, longest] layout.

        The pool may hold another precision than these weights (`precision`: a CPU may
        prefill fastest in float32 and decode fastest in bfloat16): keys and values are
        written in the pool's precision and read back in this runner's.
        """
        device = self.device
        count = len(rows)
        lengths = torch.tensor([len(r.tokens) for r in rows])
        width = int(lengths.max())
        total = int(lengths.sum())
        row_of = torch.repeat_interleave(torch.arange(count), lengths)
        first_of_row = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(total) - first_of_row[row_of]
        starts = torch.tensor([r.start for r in rows])
        positions = starts[row_of] + offset
        highest = int(positions.max())
        keys_width = int((starts + lengths).max())
        ids = torch.tensor([t for r in rows for t in r.tokens], device=device)
        row_of, offset, positions = row_of.to(device), offset.to(device), positions.to(device)
        slots = torch.tensor([r.slot for r in rows], device=device)
        write_slots = slots[row_of]
        first = rows[0].slot
        contiguous = [r.slot for r in rows] == list(range(first, first + count))
        query_positions = starts.to(device)[:, None] + torch.arange(width, device=device)[None, :]
        mask = (torch.arange(keys_width, device=device)[None, None, :] <= query_positions[:, :, None])[:, None]
        cos, sin = self.rotary_for(positions[None, :], highest)
        h = self.embed(ids[None, :])  # [1, total, hidden]
        for index, layer in enumerate(self.layers):
            q, k, v = self._attention_inputs(layer, layer.input_norm(h), cos, sin)
            keys, values = pool.keys(index), pool.values(index)
            keys[write_slots, :, positions] = k[0].transpose(0, 1).to(keys.dtype)
            values[write_slots, :, positions] = v[0].transpose(0, 1).to(values.dtype)
            if contiguous:
                seen_k, seen_v = keys[first : first + count, :, :keys_width], values[first : first + count, :, :keys_width]
            else:
                seen_k, seen_v = keys[slots, :, :keys_width], values[slots, :, :keys_width]
            seen_k, seen_v = seen_k.to(q.dtype), seen_v.to(q.dtype)  # a pool of another precision's decode
            padded = q.new_zeros((count, width, self.heads, self.head_dim))
            padded[row_of, offset] = q[0].transpose(0, 1)
            out = F.scaled_dot_product_attention(
                padded.transpose(1, 2), seen_k, seen_v, attn_mask=mask, scale=self.scaling,
                enable_gqa=self.group > 1,
            )
            packed = out.transpose(1, 2)[row_of, offset].reshape(1, total, self.heads * self.head_dim)
            h = self._mlp(layer, h + linear(packed, layer.o), index, write_slots)
        last = (torch.cumsum(lengths, 0) - 1).to(device)
        return self._finish(h[0, last], want_hidden)

    def decode(
        self, pool: KVPool, tokens: torch.Tensor, positions: torch.Tensor, want_hidden: bool = False,
        highest: int | None = None,
    ):
        """One token for each of slots 0..B-1 at its own position; logits [B, vocab].

        `tokens` and `positions` are [B] tensors on the model's device; `positions[b]`
        is where slot b's new KV goes (its current KV length). `highest`, the largest
        position, saves reading it back from the device when the caller knows it.
        """
        highest = int(positions.max()) if highest is None else highest
        if self.fused_decode is not None and not want_hidden and self.mlp_plugin is None:
            hidden = self.embed.weight.index_select(0, tokens)
            return self.fused_decode.step(hidden, positions, pool.storage, *self.rotary_tables(highest)), None
        cos, sin = self.rotary_for(positions[:, None], highest)
        # A lone row sees every key up to its position: no mask, so a GPU may pick its flash kernel.
        masked = tokens.shape[0] > 1
        return self.decode_over(pool, tokens, positions, highest + 1, cos, sin, want_hidden, masked)

    def decode_over(
        self,
        pool: KVPool,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        keys_width: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        want_hidden: bool,
        masked: bool = True,
    ):
        """The decode step with attention over the first `keys_width` positions of each slot
        (`masked=False`: every row sees all of them).

        Nothing here reads a tensor's value on the host, so with a fixed `keys_width` the
        step has static shapes and can be captured as a CUDA graph.
        """
        count = tokens.shape[0]
        # Where each row's new key and value go: one scatter per layer and tensor (cheaper on a
        # CPU than an indexed assignment, and free of host reads like it).
        write_at = positions.view(count, 1, 1, 1).expand(count, self.kv_heads, 1, self.head_dim)
        mask = None
        if masked:
            mask = (torch.arange(keys_width, device=tokens.device)[None, :] <= positions[:, None])[:, None, None, :]
        h = self.embed(tokens[:, None])
        for index, layer in enumerate(self.layers):
            q, k, v = self._attention_inputs(layer, layer.input_norm(h), cos, sin)
            keys, values = pool.keys(index), pool.values(index)
            keys[:count].scatter_(2, write_at, k)
            values[:count].scatter_(2, write_at, v)
            # One query per row: fold the query heads that share a KV head into that head's
            # "query length", so attention reads each KV head once instead of repeating it.
            grouped = q.reshape(count, self.kv_heads, self.group, self.head_dim)
            out = F.scaled_dot_product_attention(
                grouped,
                keys[:count, :, :keys_width],
                values[:count, :, :keys_width],
                attn_mask=mask,
                scale=self.scaling,
            )
            h = self._mlp(layer, h + linear(out.reshape(count, 1, self.heads * self.head_dim), layer.o), index)
        return self._finish(h[:, 0], want_hidden)

    def forward_tree(
        self, pool: KVPool, slot: int, start: int, tokens: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits `[nodes, vocab]` at every node of a draft tree (speculative verification).

        Node i's KV is written at `start + i` of `slot`; its rotary position is
        `positions[i]` (the prefix length plus its depth). `tree_mask` `[nodes, nodes]`
        says which nodes each node sees (itself and its ancestors); every node sees
        the slot's first `start` positions. A chain is the lower-triangular mask.
        """
        count = tokens.shape[0]
        cos, sin = self.rotary_for(positions[None, :], int(positions.max()))
        seen = torch.ones((count, start), dtype=torch.bool, device=tokens.device)
        mask = torch.cat([seen, tree_mask], dim=1)[None, None]
        h = self.embed(tokens[None, :])
        for index, layer in enumerate(self.layers):
            q, k, v = self._attention_inputs(layer, layer.input_norm(h), cos, sin)
            keys, values = pool.keys(index), pool.values(index)
            keys[slot, :, start : start + count] = k[0]
            values[slot, :, start : start + count] = v[0]
            out = F.scaled_dot_product_attention(
                q, keys[slot : slot + 1, :, : start + count], values[slot : slot + 1, :, : start + count],
                attn_mask=mask, scale=self.scaling, enable_gqa=self.group > 1,
            )
            h = self._mlp(layer, h + linear(out.transpose(1, 2).reshape(1, count, self.heads * self.head_dim), layer.o))
        return self._finish(h[0], False)[0]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _concatenate_into(modules, name: str, column_major: bool = False) -> torch.Tensor:
    """Concatenate the modules' `name` parameters and re-point each at its slice (held once)."""
    joined = torch.cat([getattr(m, name).data for m in modules], dim=0)
    joined = joined.t().contiguous().t() if column_major else joined.contiguous()
    offset = 0
    for m in modules:
        size = getattr(m, name).shape[0]
        getattr(m, name).data = joined[offset : offset + size]
        offset += size
    return joined


def _relayout(module, name: str) -> None:
    """Store a [out, in] weight column-major (its transpose contiguous), same values."""
    weight = getattr(module, name)
    if weight.dim() == 2 and weight.stride(0) != 1:
        weight.data = weight.data.t().contiguous().t()
