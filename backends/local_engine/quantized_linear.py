"""Quantized linear layers for the local engine on a CPU: weight-only int8 and int4, and w8a8.

Batch-1 decode reads every weight once per token, so its speed is the bytes
read per token: int8 weights read a quarter of float32's, int4 an eighth.
torch's packed CPU kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`)
multiply with such weights directly, but they are fast only for a few rows
and only with bfloat16 activations; for wide products (prefill, large decode
batches) the float BLAS beats them several times over.

So a `QuantizedWeight` quantizes once, at load, and from then on the layer's
weights *are* the dequantized values: a float copy of exactly those values
serves wide products and the packed copy serves narrow ones (at most
`PACKED_ROWS` rows). The two differ only in how the activations are rounded
(the packed kernels read them in bfloat16), as two BLAS paths may differ in
summation order — the model is the quantized one either way.

- int8: symmetric, one scale per output channel.
- int4: asymmetric, a scale and a zero point per group of `INT4_GROUP` inputs
  (llama.cpp's Q4_1 layout: a model dequantized from a Q4_1 GGUF re-quantizes
  to its own codes, the zero points rounded to bfloat16 as the kernel reads them).
- w8a8: int8's weights, and the activations quantized too — each row to int8
  with a scale of its own, at run time — so every product is an integer one
  (`torch._int_mm`, oneDNN's VNNI kernels where the CPU has them), as llama.cpp
  multiplies its 4-bit blocks with 8-bit activations. On this project's
  AVX512-VNNI CPU best-of-16 decoded 1.4x faster than with int4 and 2.5x faster
  than in bfloat16, and prefill 1.3x faster than float32
  (bench/results/decode_throughput-20261129-072704.md). It changes outputs a
  little more than int8 (activation rounding), so it is its own setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The values of a model entry's `quantization:` setting.
QUANTIZATIONS = ("none", "int8", "int4", "w8a8")

#: Inputs per int4 scale/zero group (the kernel takes 32, 64, 128 or 256; 32 is Q4_1's).
INT4_GROUP = 32

#: Products of at most this many rows use the packed kernel; wider ones the float copy.
PACKED_ROWS = 16

#: What the packed kernels read activations and scales in (float32 inputs take a slow path).
_KERNEL_DTYPE = torch.bfloat16


class QuantizedWeight:
    """A [out, in] weight quantized to int8 or int4, held packed and (but for w8a8) dequantized."""

    def __init__(self, weight: torch.Tensor, kind: str):
        if kind not in QUANTIZATIONS[1:]:
            raise ValueError(f"quantization {kind!r}: expected one of {', '.join(QUANTIZATIONS)}")
        if weight.device.type != "cpu":
            raise ValueError("quantization runs on the CPU only (torch's packed and integer CPU kernels)")
        self.kind = kind
        self.shape = weight.shape
        w = weight.detach().float()
        if kind == "int4":
            self._int4(w)
        else:
            self._int8(w)
        if kind == "w8a8":  # every product is an integer one: no float copy
            self.dense = None
            self._float_scales = self.scales.float()
            return
        #: The dequantized weight in the model's dtype, stored as the float path likes it.
        self.dense = self.dense.to(weight.dtype)
        if weight.stride(0) == 1:  # the runner's column-major float32 layout
            self.dense = self.dense.t().contiguous().t()

    def _int8(self, w: torch.Tensor) -> None:
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(_KERNEL_DTYPE)
        self.packed = (w / scales.float()[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scales = scales
        self.dense = self.packed.float() * scales.float()[:, None]

    def _int4(self, w: torch.Tensor) -> None:
        out, inner = w.shape
        if inner % INT4_GROUP or out % 16:
            raise ValueError(
                f"int4 needs input widths divisible by {INT4_GROUP} and output widths by 16; "
                f"this weight is {tuple(w.shape)}"
            )
        groups = w.view(out, inner // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scales = ((high - low) / 15).clamp(min=1e-12).to(_KERNEL_DTYPE).float()
        low = low.to(_KERNEL_DTYPE).float()
        codes = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15)
        # The kernel computes (code - 8) * scale + zero, so zero = low + 8 * scale.
        zeros = low + 8 * scales
        self.scales_and_zeros = (
            torch.stack([scales, zeros], dim=-1).to(_KERNEL_DTYPE).transpose(0, 1).contiguous()
        )  # [groups, out, 2]
        stored = self.scales_and_zeros.float().transpose(0, 1)  # what the kernel will read
        self.dense = ((codes - 8) * stored[..., 0:1] + stored[..., 1:2]).view(out, inner)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.view(out, inner).to(torch.int32), 1)

    @property
    def kernel_scales(self) -> torch.Tensor:
        """The scales the products read: int4's scales and zero points [groups, out, 2] in bfloat16,
        int8's per-channel scales in bfloat16, w8a8's in float32."""
        if self.kind == "int4":
            return self.scales_and_zeros
        return self._float_scales if self.kind == "w8a8" else self.scales

    def packed_product(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, in] @ weight.T through the packed kernel (bfloat16 activations)."""
        x = x.to(_KERNEL_DTYPE)
        if self.kind == "int8":
            return torch.ops.aten._weight_int8pack_mm(x, self.packed, self.scales)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_and_zeros)

    def integer_product(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, in] @ weight.T (float32) with x quantized to int8, a scale per row (w8a8).
        Rows of zeros stay zeros (their scale is clamped, not zero)."""
        x = x.float()
        # abs().amax(): the infinity norm's own kernel measured 5-8x slower on this project's CPU
        scales = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12).div_(127)
        codes = (x / scales).round_().to(torch.int8)
        return torch._int_mm(codes, self.packed.t()).mul(self._float_scales).mul_(scales)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, in] @ weight.T on the path that suits its width, in x's dtype."""
        if self.kind == "w8a8":
            return self.integer_product(x).to(x.dtype)
        if x.shape[0] > PACKED_ROWS:
            return F.linear(x, self.dense)
        return self.packed_product(x).to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes a packed product reads for the weight (codes and scales)."""
        extra = self.scales_and_zeros if self.kind == "int4" else self.scales
        return self.packed.numel() * self.packed.element_size() + extra.numel() * extra.element_size()


def scheme(kind: str) -> str:
    """The quantization's name in cache keys, with what else changes its values (int4's group size)."""
    return f"int4-g{INT4_GROUP}" if kind == "int4" else kind


def linear(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` over a float or quantized weight (a quantized one on the path that suits its width)."""
    if isinstance(weight, torch.Tensor):
        return F.linear(x, weight, bias)
    out = weight.product(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias


def quantize(weight: torch.Tensor, kind: str) -> torch.Tensor | QuantizedWeight:
    """`weight` itself for "none", else its quantized form."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantization {kind!r}: expected one of {', '.join(QUANTIZATIONS)}")
    return weight if kind == "none" else QuantizedWeight(weight, kind)
