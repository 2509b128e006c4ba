"""Which drafted tokens the target keeps, and moving the kept ones' KV into place.

Acceptance by matching (`verify_by_matching`) is shared by every deterministic drafter (prompt lookup,
Token Recycling, a greedy draft model): the target picks its own token at each
node — argmax when greedy, a sample drawn with the uniform it would have used
in plain decoding otherwise — and the walk descends into the child that drafted
exactly that token. The emitted tokens are always the target's own picks, so
the output is the one plain decoding gives, token for token: a draft can only
save forward passes, never change a result.

Sampled drafts (a draft model under `acceptance: rejection`) are verified by
rejection sampling instead (`verify_by_rejection`, the maths in
`orchestra.kernels.rejection_sampling`): the output follows the target's
distribution exactly, but a given seed yields a different sample than plain
decoding.

After a tree forward the accepted path's KV sits at scattered node slots;
`compact_path` moves it to consecutive positions so the cache again holds one
plain sequence, and whatever the rejected branches wrote past it is simply
never attended to (attention reads up to the sequence's length).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from orchestra.backends.local_engine.sampling import SamplingParams, choose_tokens
from orchestra.backends.local_engine.speculative.draft_tree import DraftTree
from orchestra.kernels.rejection_sampling import processed_probs, speculative_chain


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one tree.

    `path` lists the nodes whose tokens are now part of the sequence (the root first);
    `tokens` are the target's picks at those nodes — every accepted draft token plus
    one more, the correction at the first mismatch or the bonus after a fully
    accepted branch. So `len(tokens) == len(path)` and `accepted == len(path) - 1`.
    """

    path: tuple[int, ...]
    tokens: tuple[int, ...]

    @property
    def accepted(self) -> int:
        return len(self.path) - 1


def accept_matching(tree: DraftTree, target_tokens: list[int]) -> Verdict:
    """Walk down from the root while some child drafted the target's own pick at its parent.

    `target_tokens[i]` is the target's token after node i (argmax, or its seeded sample).
    """
    children = tree.children()
    node = 0
    path, tokens = [0], [target_tokens[0]]
    while True:
        wanted = target_tokens[node]
        following = next((child for child in children[node] if tree.tokens[child] == wanted), None)
        if following is None:
            return Verdict(tuple(path), tuple(tokens))
        node = following
        path.append(node)
        tokens.append(target_tokens[node])


def verify_by_matching(tree: DraftTree, logits: torch.Tensor, params: SamplingParams, stream: random.Random) -> Verdict:
    """The target's own pick at every node (`logits` `[nodes, vocab]`), then `accept_matching`.

    Sampling draws, per depth, the uniform plain decoding would draw for that token; the
    stream is then advanced by exactly the tokens emitted, as if they had been decoded one by one.
    """
    depths = tree.depths()
    if params.temperature > 0:
        state = stream.getstate()
        draws = [stream.random() for _ in range(max(depths) + 1)]
        streams = [_Fixed(draws[depth]) for depth in depths]
    else:
        streams = [_Fixed(0.0)] * len(depths)
    picks, _ = choose_tokens(logits.clone(), [params] * len(depths), streams)
    verdict = accept_matching(tree, picks)
    if params.temperature > 0:
        stream.setstate(state)
        for _ in verdict.tokens:
            stream.random()
    return verdict


def verify_by_rejection(tree: DraftTree, logits: torch.Tensor, params: SamplingParams, stream: random.Random) -> Verdict:
    """Lossless speculative sampling of a sampled chain (`tree.draft_probs` holds its draft distributions)."""
    k = len(tree) - 1
    target = processed_probs(logits, params.temperature, params.top_k, params.top_p)
    drafted = torch.tensor(tree.tokens[1:], device=logits.device)
    accept_uniforms = torch.tensor([stream.random() for _ in range(k)])
    residual_uniforms = torch.tensor([stream.random() for _ in range(k + 1)])
    kept, emitted = speculative_chain(
        target, tree.draft_probs.to(target.device), drafted, accept_uniforms, residual_uniforms
    )
    return Verdict(tuple(range(kept + 1)), tuple(emitted))


class _Fixed:
    """A stand-in random stream that returns one given uniform (a node's draw)."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def compact_path(storage: torch.Tensor, slot: int, start: int, path: tuple[int, ...] | list[int]) -> None:
    """Move the KV of `path`'s nodes (written at `start + node`) to `start, start + 1, ...`.

    `storage` is a KV pool's `[layers, 2, slots, kv_heads, length, head_dim]` tensor.
    A chain's accepted prefix is already in place: nothing moves.
    """
    if list(path) == list(range(len(path))):
        return
    source = torch.tensor(path, device=storage.device) + start
    moved = storage[:, :, slot].index_select(3, source)  # a copy: sources and targets overlap
    storage[:, :, slot, :, start : start + len(path)] = moved
