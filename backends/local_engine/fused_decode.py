"""A quantized model's decode step on a CPU as one compiled call (fused_decode.cpp).

At batch 1 the weight products are only about a third of the Python step's time
on this project's CPU: the rest is some 200 small operator calls per layer
(norms, rotary embedding, KV writes, SiLU, residual adds, dtype conversions),
each costing a few microseconds of dispatch for a few hundred floats of work
(bench/results/step_profile-*.md). The compiled step calls the same torch kernels
for the products and attention, so it gives the Python step's values up to
float rounding in that small arithmetic, which it runs as plain loops.

It is built at first use with `torch.utils.cpp_extension` (about a minute on a
2-core CPU, once: torch keeps the build in its extension folder). It serves
quantized float32 models of the plain Llama structure on a CPU; for anything
else — a GPU, hidden states asked for, biases or q/k norms, sparse MLPs, no
C++ compiler, or `ORCHESTRA_FUSED_DECODE=0` — the runner keeps its Python step.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from functools import cache
from pathlib import Path

import torch

from orchestra.backends.local_engine.quantized_linear import INT4_GROUP, PACKED_ROWS, QuantizedWeight

log = logging.getLogger(__name__)

#: Set to 0 to keep the Python decode step (for comparison, or where no compiler is wanted).
ENVIRONMENT_SWITCH = "ORCHESTRA_FUSED_DECODE"

_KINDS = {"int8": 0, "int4": 1, "w8a8": 2}

_SOURCE = Path(__file__).with_suffix(".cpp")


def build_folder() -> Path:
    """Where the compiled step is kept: torch's extension folder (`$TORCH_EXTENSIONS_DIR`, else
    ~/.cache/torch_extensions), one build per torch and Python version."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / f"orchestra_fused_decode-torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"


@cache
def _extension():
    """The compiled module, or None where it cannot be built (said once, in the log)."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # the `ninja` package's binary, in an environment not on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    folder = build_folder()
    folder.mkdir(parents=True, exist_ok=True)
    built = [p for p in folder.glob("*.so") if p.stat().st_mtime >= _SOURCE.stat().st_mtime]
    if not built:
        log.warning("compiling the fused CPU decode step into %s (once, about a minute on 2 cores)", folder)
    try:
        return cpp_extension.load(
            "orchestra_fused_decode", [str(_SOURCE)], extra_cflags=["-O3"], build_directory=str(folder), verbose=False
        )
    except Exception as error:  # no compiler, no ninja, no Python headers: the Python step serves
        lines = [line.strip() for line in str(error).splitlines() if line.strip() not in ("", ")")]
        reason = next((line for line in lines if "error:" in line.lower()), None)  # a compiler diagnostic
        reason = reason or next((line for line in reversed(lines) if not line.startswith("ninja:")), type(error).__name__)
        log.warning(
            "the fused CPU decode step could not be built (%s); the Python step serves. "
            "%s=0 skips the attempt; the whole build output is logged at DEBUG level",
            reason[:300], ENVIRONMENT_SWITCH,
        )
        log.debug("building the fused CPU decode step failed", exc_info=error)
        return None


def unsupported_reason(runner) -> str | None:
    """Why the compiled step cannot serve this runner, or None if it can."""
    if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":
        return f"{ENVIRONMENT_SWITCH}=0"
    if runner.device.type != "cpu" or runner.dtype != torch.float32:
        return "it serves float32 models on a CPU"
    if runner.quantization not in _KINDS:
        return "it serves quantized models"
    if runner.mlp_plugin is not None:
        return "sparse MLPs"
    if runner.lm_head.bias is not None or any(
        layer.qkv_bias is not None or layer.q_norm is not None for layer in runner.layers
    ):
        return "biases or q/k norms"
    norms = [runner.norm] + [n for layer in runner.layers for n in (layer.input_norm, layer.post_norm)]
    if len({n.eps for n in norms}) != 1 or runner.norm.eps is None:
        return "norms of another kind"
    return None


def build(runner):
    """The compiled step over `runner`'s weights, or None (see `unsupported_reason`)."""
    reason = unsupported_reason(runner)
    if reason is not None:
        log.info("fused CPU decode step not used: %s", reason)
        return None
    extension = _extension()
    if extension is None:
        return None
    products = [getattr(layer, name) for layer in runner.layers for name in ("qkv", "o", "gate_up", "down")]
    products.append(runner.head)
    assert all(isinstance(p, QuantizedWeight) for p in products)
    empty = torch.empty(0)
    norms = [n.module.weight.detach() for layer in runner.layers for n in (layer.input_norm, layer.post_norm)]
    norms.append(runner.norm.module.weight.detach())
    return extension.FusedDecode(
        [n.contiguous() for n in norms],
        [_KINDS[p.kind] for p in products],
        [p.packed for p in products],
        [p.kernel_scales for p in products],
        [empty if p.dense is None else p.dense for p in products],
        runner.heads, runner.kv_heads, runner.head_dim, products[2].shape[0] // 2,
        float(runner.norm.eps), float(runner.scaling), INT4_GROUP, PACKED_ROWS,
    )
