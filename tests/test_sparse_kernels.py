"""Sparse-activation kernels on synthetic tensors: core neuron selection, thresholds, the CPU
column-skipping GEMV, the Triton kernel (compiled on a GPU, interpreted on a CPU: `triton_device`,
tests/triton_device.py), the sparse MLP plugins, the options block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from orchestra.backends.local_engine.options import SparseOptions
from orchestra.kernels import core_neurons, cpu_sparse_gemv, triton_sparse_gemv
from orchestra.kernels.sparse_mlp import CoreNeuronMLP, TealMLP, dense_mlp, slice_mlp
from orchestra.kernels.teal_calibration import TealThresholds, magnitude_threshold
from orchestra.backends import ModelSpec
from orchestra.recipe import RecipeError

HIDDEN, WIDTH, LAYERS = 48, 96, 3


def column_major(weight: torch.Tensor) -> torch.Tensor:
    return weight.t().contiguous().t()


@pytest.fixture
def weights():
    generator = torch.Generator().manual_seed(0)
    gate_up = column_major(torch.randn(2 * WIDTH, HIDDEN, generator=generator) / HIDDEN**0.5)
    down = column_major(torch.randn(HIDDEN, WIDTH, generator=generator) / WIDTH**0.5)
    return gate_up, down


# ----- core neurons -------------------------------------------------------------------------


def test_neurons_kept_rounds_and_rejects_bad_sparsity():
    assert core_neurons.neurons_kept(1536, 0.0) == 1536
    assert core_neurons.neurons_kept(1536, 0.5) == 768
    assert core_neurons.neurons_kept(10, 0.99) == 1
    with pytest.raises(ValueError):
        core_neurons.neurons_kept(10, 1.0)


def test_core_neurons_are_the_most_voted_sorted():
    activations = torch.zeros(4, 8)
    activations[:, 5] = 3.0  # every token's strongest
    activations[:3, 1] = 2.0  # three tokens' second
    activations[3, 6] = 2.5
    votes, magnitude = core_neurons.neuron_votes(activations, keep=2)
    assert votes.tolist() == [0, 3, 0, 0, 0, 4, 1, 0]
    assert core_neurons.select_core_neurons(votes, magnitude, 2).tolist() == [1, 5]
    # a tie in votes is broken by magnitude
    tied = core_neurons.select_core_neurons(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 5.0, 9.0]), 1)
    assert tied.tolist() == [1]


def test_union_of_core_sets():
    union = core_neurons.union_of([torch.tensor([1, 4]), torch.tensor([0, 4, 7])], 8)
    assert union.tolist() == [0, 1, 4, 7]


# ----- thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.75])
def test_magnitude_threshold_zeroes_the_target_share(sparsity):
    values = torch.randn(200, 300, generator=torch.Generator().manual_seed(1))
    threshold = magnitude_threshold(values, sparsity)
    zeroed = (values.abs() <= threshold).float().mean().item()
    assert zeroed == pytest.approx(sparsity, abs=0.002)


# ----- CPU and Triton sparse GEMV ---------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.2, 10.0])
def test_column_skipping_gemv_equals_dense_on_surviving_inputs(threshold):
    generator = torch.Generator().manual_seed(2)
    weight = column_major(torch.randn(130, 70, generator=generator))
    x = torch.randn(70, generator=generator)
    kept = x.abs() > threshold
    expected = weight[:, kept] @ x[kept]  # dense product over the surviving inputs only
    torch.testing.assert_close(cpu_sparse_gemv.thresholded_gemv(x, weight, threshold), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cpu_sparse_gemv.masked_linear(x, weight, threshold), expected, atol=1e-5, rtol=1e-5)


def test_column_skipping_gemv_needs_column_major_weights():
    with pytest.raises(ValueError, match="column-major"):
        cpu_sparse_gemv.thresholded_gemv(torch.randn(4), torch.randn(3, 4), 0.1)


@pytest.mark.parametrize("layout", ["row_major", "column_major"])
@pytest.mark.parametrize("rows,out_features,in_features", [(1, 96, 48), (3, 130, 70)])
def test_triton_kernel_equals_torch_reference(layout, rows, out_features, in_features, triton_device):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(out_features, in_features, generator=generator)
    if layout == "column_major":
        weight = column_major(weight)
    x = torch.randn(rows, in_features, generator=generator)
    for threshold in (0.0, 0.7):
        got = triton_sparse_gemv.thresholded_linear(x.to(triton_device), weight.to(triton_device), threshold, block_n=32, block_k=16)
        assert got.device.type == triton_device.type
        torch.testing.assert_close(got.cpu(), cpu_sparse_gemv.masked_linear(x, weight, threshold), atol=1e-5, rtol=1e-5)


# ----- the sparse MLP plugins ---------------------------------------------------------------------


def test_slice_with_every_neuron_is_the_original(weights):
    gate_up, down = weights
    same = slice_mlp(gate_up, down, torch.arange(WIDTH))
    assert same[0] is gate_up and same[1] is down


def test_sliced_mlp_equals_dense_with_other_neurons_zeroed(weights):
    gate_up, down = weights
    neurons = torch.tensor([0, 3, 10, 50, 95])
    sliced_gate_up, sliced_down = slice_mlp(gate_up, down, neurons)
    assert cpu_sparse_gemv.is_column_major(sliced_gate_up) and cpu_sparse_gemv.is_column_major(sliced_down)
    x = torch.randn(2, 1, HIDDEN)
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    active = F.silu(gate) * up
    mask = torch.zeros(WIDTH)
    mask[neurons] = 1.0
    torch.testing.assert_close(dense_mlp(x, sliced_gate_up, sliced_down), F.linear(active * mask, down))


def _prefill_and_decode(plugin, weights, slots, decode_states_from):
    gate_up, down = weights
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, len(slots), HIDDEN, generator=generator)
    for layer in range(LAYERS):
        out = plugin(layer, x, gate_up, down, torch.tensor(slots))
        torch.testing.assert_close(out, dense_mlp(x, gate_up, down))  # prefill stays dense
    states = [plugin.prefilled(slot) for slot in decode_states_from]
    plugin.begin_decode(states)
    step = torch.randn(len(states), 1, HIDDEN, generator=generator)
    return states, step, [plugin(layer, step, gate_up, down, None) for layer in range(LAYERS)]


def test_core_neuron_mlp_decodes_with_each_sequences_core_set(weights):
    gate_up, down = weights
    plugin = CoreNeuronMLP(0.75, LAYERS, WIDTH)
    assert plugin.needs_whole_prompt
    states, step, outs = _prefill_and_decode(plugin, weights, [0, 0, 0, 1, 1], decode_states_from=[0, 1])
    for state in states:
        assert len(state) == LAYERS and all(len(s) == WIDTH // 4 for s in state)
    for layer in range(LAYERS):
        union = core_neurons.union_of([state[layer] for state in states], WIDTH)
        torch.testing.assert_close(outs[layer], dense_mlp(step, *slice_mlp(gate_up, down, union)))
    # one sequence alone decodes with its own set
    plugin.begin_decode(states[:1])
    alone = plugin(0, step[:1], gate_up, down, None)
    torch.testing.assert_close(alone, dense_mlp(step[:1], *slice_mlp(gate_up, down, states[0][0])))
    # a row without a core set falls back to dense
    plugin.begin_decode([None])
    torch.testing.assert_close(plugin(0, step[:1], gate_up, down, None), dense_mlp(step[:1], gate_up, down))


def test_core_neuron_mlp_at_sparsity_zero_is_exactly_dense(weights):
    gate_up, down = weights
    plugin = CoreNeuronMLP(0.0, LAYERS, WIDTH)
    assert not plugin.needs_whole_prompt
    _, step, outs = _prefill_and_decode(plugin, weights, [0, 0], decode_states_from=[0])
    for out in outs:
        assert torch.equal(out, dense_mlp(step, gate_up, down))


def test_teal_mlp_at_sparsity_zero_is_exactly_dense(weights):
    gate_up, down = weights
    plugin = TealMLP(TealThresholds(0.0, (0.0,) * LAYERS, (0.0,) * LAYERS))
    x = torch.randn(1, 1, HIDDEN)
    assert torch.equal(plugin(1, x, gate_up, down, None), dense_mlp(x, gate_up, down))


def _teal_mlp_agrees_with_the_masked_reference(weights, kernel: str, device: torch.device) -> None:
    gate_up, down = weights
    thresholds = TealThresholds(0.5, (0.6,) * LAYERS, (0.05,) * LAYERS)
    x = torch.randn(1, 1, HIDDEN, generator=torch.Generator().manual_seed(5))
    xs = torch.where(x.abs() > 0.6, x, 0.0)
    gate, up = F.linear(xs, gate_up).chunk(2, dim=-1)
    active = F.silu(gate) * up
    expected = F.linear(torch.where(active.abs() > 0.05, active, 0.0), down)
    gate_up, down, x = (t.to(device) for t in (gate_up, down, x))
    got = TealMLP(thresholds, kernel)(0, x, gate_up, down, None).cpu()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, dense_mlp(x, gate_up, down).cpu(), atol=1e-3)  # sparsity changed the value
    # prefill (slots given) stays dense
    prefill = TealMLP(thresholds, kernel)(0, x, gate_up, down, torch.tensor([0], device=device))
    assert torch.equal(prefill, dense_mlp(x, gate_up, down))


@pytest.mark.parametrize("kernel", ["columns", "masked"])
def test_teal_mlp_kernels_agree_with_the_masked_reference(weights, kernel):
    _teal_mlp_agrees_with_the_masked_reference(weights, kernel, torch.device("cpu"))


def test_teal_mlp_triton_kernel_agrees_with_the_masked_reference(weights, triton_device):
    _teal_mlp_agrees_with_the_masked_reference(weights, "triton", triton_device)


# ----- the options block ----------------------------------------------------------------------------


def test_sparse_options_validate_and_enter_the_cache_key():
    spec = ModelSpec(sparse={"method": "teal", "sparsity": 0.4})
    assert spec.key().endswith(":sparse=teal@0.4")
    assert ModelSpec().key() != spec.key()
    assert ModelSpec(sparse={"method": "coreinfer", "sparsity": 0.4}).key() != spec.key()
    with pytest.raises(ValueError):
        SparseOptions(method="teal", sparsity=1.0)
    with pytest.raises(ValueError):
        SparseOptions(method="magic", sparsity=0.2)
    with pytest.raises(ValueError, match="kernel"):
        SparseOptions(method="coreinfer", sparsity=0.2, kernel="columns")


def test_sparse_block_is_for_the_local_backend_only():
    with pytest.raises((ValueError, RecipeError), match="sparse"):
        ModelSpec(backend="vllm", sparse={"method": "teal", "sparsity": 0.4})
