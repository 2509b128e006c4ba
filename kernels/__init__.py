"""Decode kernels for the local backend: speculative decoding (and sparse activation).

Torch reference implementations, one concept per module, with Triton versions
for GPUs (checked on CPU under `TRITON_INTERPRET=1`):

- `draft_tree` — a draft tree, its ancestor mask and depth positions;
- `verification` — acceptance by matching the target's own picks, KV compaction;
- `rejection_sampling` — lossless speculative sampling against a draft distribution;
- `drafter` — the drafter protocol; `prompt_lookup`, `draft_model`, `token_recycling` — the drafters;
- `triton_tree_attention`, `triton_rejection_sampling` — the Triton kernels.

Only `orchestra.backends` imports this package.
"""
