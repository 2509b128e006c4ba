"""Speculative decoding for a lone sequence: draft several tokens, verify them in one forward.

On a CPU a decode step of a small model is bound by reading the weights, so a
forward over a handful of tokens costs little more than over one. When exactly
one sequence runs (batch 1: an interactive request, a long answer), the engine
hands its decode step here: a drafter proposes a tree of guesses, the target
scores every node in one `forward_tree` pass, and the accepted path becomes
part of the sequence — several tokens for one target forward. With several
sequences running the engine's batched step is used unchanged.

Lossless by construction: deterministic drafts (prompt lookup, Token Recycling,
a greedy draft model) are accepted by *matching* the target's own picks, so the
output is plain decoding's, seed for seed; sampled drafts (a draft model under
`acceptance: rejection`) are verified by rejection sampling, so the output
follows the target's distribution exactly.

Reading order:

- `decoder` — the loop: propose, verify in one forward, keep the accepted path;
- `draft_tree` — a tree of guesses, its ancestor mask and rotary positions;
- `verification` — which drafted tokens the target keeps, and moving their KV into place;
- `drafter` — what every drafter offers; the drafters: `prompt_lookup`,
  `token_recycling` and `draft_model`, whose cheaper forward comes from `draft_forwards`.

The numerical pieces (rejection sampling, its Triton kernel) are in `orchestra.kernels`.
"""

from orchestra.backends.local_engine.speculative.decoder import SpeculativeDecoder, SpeculativeStats

__all__ = ["SpeculativeDecoder", "SpeculativeStats"]
