"""Pluggable decode MLPs for the local engine's runner: CoreInfer core neurons and TEAL thresholds.

The runner (`backends/local_engine/llama_runner.py`) computes every layer's MLP as
`dense_mlp(x, gate_up, down)` — x the post-attention-normalised hidden state,
`gate_up` the fused [2F, H] gate/up weight, `down` the [H, F] down weight. With a
plugin installed it calls the plugin instead, with the layer index and, during
prefill, the slot of each packed token. Prefill stays dense in both methods: a
prompt is read once and its MLP cost is shared by all of its tokens; the saving
is in decode, which re-reads every weight for each new token.

The engine drives per-sequence state through two hooks: `prefilled(slot)` takes
what the plugin learnt from a sequence's prefill (CoreInfer: its core neurons),
stored on the sequence; `begin_decode(states)` hands the running batch's states,
in slot order, before each decode step.

- `CoreNeuronMLP` (CoreInfer): after a sequence's prefill, its core neurons per
  layer; decode runs dense MLPs over the sliced weights. At batch > 1 the slice
  is the union of the running sequences' core sets (re-sliced only when the
  batch changes), so a wide batch drifts back towards the dense MLP — CoreInfer
  is a batch-1 latency technique; the union keeps every sequence's own neurons.
- `TealMLP` (TEAL): zero MLP inputs below per-layer thresholds, per token, at any
  batch; only batch 1 reads fewer weights (a column-skipping GEMV on CPU from
  sparsity 0.5, where it starts to beat the dense product; a Triton kernel on
  GPU); otherwise the masked dense product, which changes values, not speed.

At sparsity 0 both run the dense arithmetic itself, so outputs equal dense exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from orchestra.kernels import core_neurons, cpu_sparse_gemv, triton_sparse_gemv
from orchestra.kernels.teal_calibration import TealThresholds, load_or_calibrate

SparseMethod = Literal["coreinfer", "teal"]
#: Below this sparsity the column-skipping GEMV loses to the dense product on this project's
#: CPU (bench/sparse.py kernel table: 0.81x at 0.25, 0.99x at 0.4, 1.09x at 0.5, 1.27x at 0.6),
#: so "auto" runs the masked dense product there.
COLUMNS_FROM_SPARSITY = 0.5
TealKernel = Literal["auto", "masked", "columns", "triton"]


def dense_mlp(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The Llama MLP, down(silu(gate(x)) * up(x)), over the fused gate/up weight."""
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down)


class MLPPlugin(Protocol):
    """What the runner and engine call; see the module docstring."""

    #: The plugin needs every prompt token prefilled (no prefix-cache reuse), e.g. to pick core neurons.
    needs_whole_prompt: bool

    def __call__(
        self, layer: int, x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, slots: torch.Tensor | None
    ) -> torch.Tensor: ...

    def prefilled(self, slot: int) -> object | None: ...

    def begin_decode(self, states: list[object | None]) -> None: ...


class CoreNeuronMLP:
    """CoreInfer: decode with each layer's MLP sliced to the prompt's core neurons."""

    def __init__(self, sparsity: float, layers: int, width: int):
        self.sparsity = sparsity
        self.layers = layers
        self.width = width
        self.keep = core_neurons.neurons_kept(width, sparsity)
        self.needs_whole_prompt = self.keep < width
        self._learnt: dict[int, list[torch.Tensor]] = {}  # slot -> per-layer core sets, filled by prefill
        self._batch: tuple[object, ...] = ()  # the states the current slices were cut for
        self._neurons: list[torch.Tensor] | None = None  # per layer, union of the batch's core sets
        self._sliced: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, layer, x, gate_up, down, slots):
        if self.keep >= self.width:
            return dense_mlp(x, gate_up, down)
        if slots is not None:
            return self._prefill(layer, x, gate_up, down, slots)
        if self._neurons is None:  # a row without a core set (e.g. the engine never said): dense
            return dense_mlp(x, gate_up, down)
        sliced = self._sliced.get(layer)
        if sliced is None:
            sliced = self._sliced[layer] = slice_mlp(gate_up, down, self._neurons[layer])
        return dense_mlp(x, *sliced)

    def _prefill(self, layer, x, gate_up, down, slots):
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        active = F.silu(gate) * up
        flat, owners = active.reshape(-1, self.width), slots.reshape(-1)
        for slot in owners.unique().tolist():
            votes, magnitude = core_neurons.neuron_votes(flat[owners == slot], self.keep)
            chosen = core_neurons.select_core_neurons(votes, magnitude, self.keep)
            learnt = self._learnt.setdefault(slot, [])
            if layer == 0:
                learnt.clear()
            learnt.append(chosen)
        return F.linear(active, down)

    def prefilled(self, slot: int) -> list[torch.Tensor] | None:
        learnt = self._learnt.pop(slot, None)
        return learnt if learnt is not None and len(learnt) == self.layers else None

    def begin_decode(self, states: list[object | None]) -> None:
        if len(states) == len(self._batch) and all(a is b for a, b in zip(states, self._batch)):
            return
        self._batch = tuple(states)
        self._sliced.clear()
        if not states or any(state is None for state in states):
            self._neurons = None
            return
        self._neurons = [
            core_neurons.union_of([state[layer] for state in states], self.width) for layer in range(self.layers)
        ]


def slice_mlp(gate_up: torch.Tensor, down: torch.Tensor, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_up and down cut to `neurons` (same values, same memory order as the originals)."""
    width = down.shape[1]
    if neurons.numel() == width:
        return gate_up, down
    rows = torch.cat([neurons, neurons + width])
    if cpu_sparse_gemv.is_column_major(gate_up):
        sliced_gate_up = gate_up.t().index_select(1, rows).t()
    else:
        sliced_gate_up = gate_up.index_select(0, rows)
    if cpu_sparse_gemv.is_column_major(down):
        sliced_down = down.t().index_select(0, neurons).t()
    else:
        sliced_down = down.index_select(1, neurons)
    return sliced_gate_up, sliced_down


class TealMLP:
    """TEAL: zero each token's small MLP inputs; at batch 1 skip their weight columns."""

    needs_whole_prompt = False

    def __init__(self, thresholds: TealThresholds, kernel: TealKernel = "auto"):
        self.thresholds = thresholds
        self.kernel = kernel
        if kernel == "triton" and not triton_sparse_gemv.available():
            raise RuntimeError("kernel 'triton' needs the triton package")

    def __call__(self, layer, x, gate_up, down, slots):
        if slots is not None or self.thresholds.sparsity == 0.0:
            return dense_mlp(x, gate_up, down)
        linear = self._linear_for(x, gate_up)
        gate, up = linear(x, gate_up, self.thresholds.mlp_input[layer]).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, down, self.thresholds.down_input[layer])

    def _linear_for(self, x: torch.Tensor, weight: torch.Tensor):
        kernel = self.kernel
        if kernel == "auto":
            if x.is_cuda and triton_sparse_gemv.available():
                kernel = "triton"
            elif (
                x.shape[:-1].numel() == 1
                and cpu_sparse_gemv.is_column_major(weight)
                and self.thresholds.sparsity >= COLUMNS_FROM_SPARSITY
            ):
                kernel = "columns"
            else:
                kernel = "masked"
        if kernel == "triton":
            return triton_sparse_gemv.thresholded_linear
        if kernel == "columns" and x.shape[:-1].numel() == 1:
            return _columns_linear
        return cpu_sparse_gemv.masked_linear

    def prefilled(self, slot: int) -> None:
        return None

    def begin_decode(self, states: list[object | None]) -> None:
        return None


def _columns_linear(x: torch.Tensor, weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """One-row `masked_linear` by the column-skipping GEMV, in x's shape."""
    return cpu_sparse_gemv.thresholded_gemv(x.reshape(-1), weight, threshold).reshape(*x.shape[:-1], -1)


def build_mlp_plugin(
    method: SparseMethod,
    sparsity: float,
    model,
    tokenizer,
    model_name: str,
    thresholds_folder: Path,
    kernel: TealKernel = "auto",
) -> CoreNeuronMLP | TealMLP:
    """The decode MLP for `method` at `sparsity` (TEAL thresholds loaded from `thresholds_folder`,
    or calibrated and stored there)."""
    config = model.config
    if method == "coreinfer":
        return CoreNeuronMLP(sparsity, config.num_hidden_layers, config.intermediate_size)
    if method == "teal":
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        return TealMLP(load_or_calibrate(model, tokenizer, model_name, sparsity, thresholds_folder), kernel)
    raise ValueError(f"unknown sparse method {method!r}; use 'coreinfer' or 'teal'")
