"""Decode kernels for the local backend: speculative decoding and sparse activation.

Torch reference implementations, one concept per module, with Triton versions
for GPUs (checked on CPU under `TRITON_INTERPRET=1`). Only `orchestra.backends`
imports this package.

Speculative decoding:

- `draft_tree` — a draft tree, its ancestor mask and depth positions;
- `verification` — acceptance by matching the target's own picks, KV compaction;
- `rejection_sampling` — lossless speculative sampling against a draft distribution;
- `drafter` — the drafter protocol; `prompt_lookup`, `draft_model`, `token_recycling` — the drafters;
- `triton_tree_attention`, `triton_rejection_sampling` — the Triton kernels.

Sparse activation:

- `core_neurons` — CoreInfer's per-prompt core neuron selection;
- `teal_calibration` — TEAL's per-layer magnitude thresholds for a target sparsity;
- `sparse_mlp` — the pluggable decode MLPs the local engine's runner calls;
- `cpu_sparse_gemv` — a GEMV that reads only the weight columns of nonzero inputs (CPU, batch 1);
- `triton_sparse_gemv` — the thresholded GEMV as a Triton kernel (GPU; interpreted on CPU in tests);
- `sparse_draft` — a TEAL-sparse copy of the runner, the draft of sparse self-speculation.
"""
