"""Numerical kernels of the local engine: speculative sampling maths and sparse activation.

Torch reference implementations, one concept per module, with Triton versions
for GPUs (checked on CPU under `TRITON_INTERPRET=1`). Only numbers live here —
the algorithms that use them (drafting, the decode loop) are in
`orchestra.backends.local_engine` — and this package imports nothing from
orchestra outside itself; only `orchestra.backends` imports it.

Speculative decoding:

- `rejection_sampling` — lossless speculative sampling against a draft distribution;
- `triton_rejection_sampling` — the same as a Triton kernel.

Sparse activation:

- `core_neurons` — CoreInfer's per-prompt core neuron selection;
- `teal_calibration` — TEAL's per-layer magnitude thresholds for a target sparsity;
- `sparse_mlp` — the pluggable decode MLPs the local engine's runner calls;
- `cpu_sparse_gemv` — a GEMV that reads only the weight columns of nonzero inputs (CPU, batch 1);
- `triton_sparse_gemv` — the thresholded GEMV as a Triton kernel (GPU; interpreted on CPU in tests).
"""
