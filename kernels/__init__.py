"""Decode kernels for the local backend: sparse activation (and speculative decoding).

Torch reference versions first, with Triton versions for GPUs. Used by the
backends only. Sparse activation, one concept per module:

- `core_neurons` — CoreInfer's per-prompt core neuron selection;
- `teal_calibration` — TEAL's per-layer magnitude thresholds for a target sparsity;
- `sparse_mlp` — the pluggable decode MLPs the local engine's runner calls;
- `cpu_sparse_gemv` — a GEMV that reads only the weight columns of nonzero inputs (CPU, batch 1);
- `triton_sparse_gemv` — the thresholded GEMV as a Triton kernel (GPU; interpreted on CPU in tests);
- `sparse_draft` — a TEAL-sparse copy of the runner, the draft of sparse self-speculation.
"""
