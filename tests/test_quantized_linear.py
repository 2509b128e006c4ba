"""Quantized linear layers (weight-only int8/int4, w8a8), the runner holding them, and the `quantization:` setting."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_llama import tiny_llama

from orchestra.backends import ModelSpec
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.backends.local_engine.quantized_linear import (
    INT4_GROUP,
    PACKED_ROWS,
    QuantizedWeight,
    linear,
    quantize,
)
from orchestra.errors import RecipeError
from orchestra.recipe import load_recipe


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


@pytest.mark.parametrize(("kind", "tolerance"), [("int8", 0.01), ("int4", 0.12), ("w8a8", 0.015)])
@pytest.mark.parametrize("rows", [1, PACKED_ROWS, PACKED_ROWS + 1, 40])
def test_quantized_linear_is_close_to_the_float_linear(kind: str, tolerance: float, rows: int) -> None:
    """Relative (Frobenius) error of the output against the float product: under 1% for int8
    (127 levels per channel), under 12% for int4 (16 levels per group of 32, Gaussian weights),
    under 1.5% for w8a8 (int8's weights, and 127 levels per row of activations)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 128, generator=generator)
    x = torch.randn(rows, 128, generator=generator)
    reference = F.linear(x, weight)
    ours = linear(x, quantize(weight, kind))
    assert ours.shape == reference.shape and ours.dtype == torch.float32
    assert _relative_error(ours, reference) < tolerance


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_packed_and_dense_paths_compute_the_same_dequantized_product(kind: str) -> None:
    """The two kernels hold one set of weights: they differ only by bfloat16 activation rounding."""
    generator = torch.Generator().manual_seed(1)
    weight = QuantizedWeight(torch.randn(64, 64, generator=generator), kind)
    x = torch.randn(3, 64, generator=generator)
    dense = F.linear(x, weight.dense)
    assert _relative_error(linear(x, weight), dense) < 0.01  # 3 rows: packed
    wide = torch.randn(PACKED_ROWS + 1, 64, generator=generator)
    assert torch.equal(linear(wide, weight), F.linear(wide, weight.dense))


def test_w8a8_is_the_int8_weights_times_each_row_rounded_to_its_own_int8_grid() -> None:
    """The integer product equals, to float rounding, the dequantized int8 weights applied to
    activations rounded per row to 127 levels of that row's largest magnitude; a zero row stays
    zero, and a row's scale is its own (a row 1000x larger does not coarsen its neighbours)."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(48, 64, generator=generator)
    ours = QuantizedWeight(weight, "w8a8")
    assert ours.dense is None and ours.packed.dtype == torch.int8
    x = torch.randn(4, 64, generator=generator)
    x[1] = 0
    x[2] *= 1000
    row_scales = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    rounded = (x / row_scales).round() * row_scales
    expected = F.linear(rounded, ours.packed.float() * ours.scales.float()[:, None])
    product = linear(x, ours)
    assert torch.allclose(product, expected, rtol=1e-5, atol=1e-3)
    assert torch.equal(product[1], torch.zeros(48))
    int8 = QuantizedWeight(weight, "int8")
    assert torch.equal(ours.packed, int8.packed) and torch.equal(ours.scales, int8.scales)  # int8's weights


def test_int4_reproduces_weights_already_on_a_4_bit_grid() -> None:
    """A Q4_1-dequantized model (the default one) re-quantizes to its own weights, up to the
    kernel's bfloat16 rounding of each group's zero point (half a bf16 ulp of |zero|)."""
    generator = torch.Generator().manual_seed(2)
    groups = 16 * 96 // INT4_GROUP
    codes = torch.randint(0, 16, (groups, INT4_GROUP), generator=generator).float()
    codes[:, 0], codes[:, 1] = 0, 15  # each group spans its full range, as Q4_1's blocks do
    scale = (torch.rand(groups, 1, generator=generator) * 0.01 + 1e-3).bfloat16().float()
    low = (torch.randn(groups, 1, generator=generator) * 0.05).bfloat16().float()
    weight = (codes * scale + low).view(16, 96)
    zero_rounding = float((low + 8 * scale).abs().max()) * 2**-8
    error = (QuantizedWeight(weight, "int4").dense - weight).abs().max()
    assert error <= zero_rounding + 1e-7
    assert error < float(scale.min()) / 2  # under half a quantization step: every code is kept


def test_int8_and_w8a8_read_8_bits_a_weight_and_int4_5_bits_with_its_scales() -> None:
    """Per weight: int8 one byte (+ a scale per row); int4 four bits + a bf16 scale and zero per 32."""
    weight = torch.randn(256, 256)
    assert QuantizedWeight(weight, "int8").nbytes == weight.numel() + 256 * 2
    assert QuantizedWeight(weight, "w8a8").nbytes == weight.numel() + 256 * 2  # int8's weights
    assert QuantizedWeight(weight, "int4").nbytes == weight.numel() * 5 // 8


def test_bad_quantization_values_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="expected one of none, int8, int4, w8a8"):
        quantize(torch.randn(4, 32), "int3")
    with pytest.raises(ValueError, match="divisible by 32"):
        quantize(torch.randn(16, 48), "int4")
    with pytest.raises(ValueError, match="output widths by 16"):
        quantize(torch.randn(8, 64), "int4")
    with pytest.raises(ValueError, match="'none', 'int8', 'int4' or 'w8a8'"):
        ModelSpec(quantization="q4")



@pytest.mark.parametrize(("kind", "tolerance"), [("int8", 0.02), ("int4", 0.2), ("w8a8", 0.03)])
def test_a_quantized_runner_stays_close_to_the_float_one(kind: str, tolerance: float) -> None:
    """Prefill (wide: float BLAS, or integer products for w8a8) and decode (narrow: packed
    kernels) logits of the quantized runner against the float runner's, on a random tiny Llama."""
    model = tiny_llama()
    float_runner, quantized = LlamaRunner(model), LlamaRunner(model)
    quantized.quantize(kind)
    assert quantized.layers[0].qkv.kind == kind
    assert quantized.head.kind == ("int8" if kind == "int4" else kind)  # int4's head: int8
    assert isinstance(float_runner.layers[0].qkv, torch.Tensor)  # the HF modules' weights are untouched
    prompt = tuple(range(3, 3 + 2 * PACKED_ROWS))
    results = []
    for runner in (float_runner, quantized):
        pool = KVPool(layers=3, kv_heads=2, head_dim=16, dtype=torch.float32, device=torch.device("cpu"), byte_limit=1 << 24)
        pool.reserve(2, 64)
        with torch.inference_mode():
            prefill, _ = runner.prefill(pool, [PrefillRow(0, 0, prompt), PrefillRow(1, 0, prompt[:5])])
            decode, _ = runner.decode(pool, torch.tensor([7, 9]), torch.tensor([len(prompt), 5]))
        results.append((prefill, decode))
    (float_prefill, float_decode), (ours_prefill, ours_decode) = results
    assert _relative_error(ours_prefill, float_prefill) < tolerance
    assert _relative_error(ours_decode, float_decode) < tolerance
    assert not torch.equal(ours_decode, float_decode)  # it did quantize


def test_the_setting_flows_from_the_recipe_to_the_cache_key(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent("""
        name: q
        models:
          m: {backend: local, model: smollm2-135m-instruct, dtype: float32, quantization: int4}
        nodes:
          - {id: gen, technique: sample, params: {n: 1}}
    """))
    spec = load_recipe(path).models["m"]
    assert spec.options.quantization == "int4"
    plain = ModelSpec(model="smollm2-135m-instruct", dtype="float32")
    assert spec.key() == f"{plain.key()}:quantization=int4-g32"  # a quantized run never replays float samples
    assert ModelSpec(model="smollm2-135m-instruct", dtype="float32", quantization="int8").key().endswith("=int8")
    assert ModelSpec(model="smollm2-135m-instruct", dtype="float32", quantization="w8a8").key().endswith("=w8a8")
    assert ModelSpec(model="smollm2-135m-instruct", dtype="float32", quantization="none").key() == plain.key()
    path.write_text(path.read_text().replace("quantization: int4", "quantization: int3"))
    with pytest.raises(RecipeError, match="models.m.quantization"):
        load_recipe(path)


def test_quantization_and_sparse_mlps_are_refused_together() -> None:
    with pytest.raises(ValueError, match="`sparse:` and `quantization:` together"):
        ModelSpec(quantization="int8", sparse={"method": "teal", "sparsity": 0.5})
