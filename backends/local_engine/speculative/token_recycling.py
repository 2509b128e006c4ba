"""Token Recycling: remember the target's top-k next tokens per token, draft a tree from them.

Every verification computes logits at every node of a tree, and all but the
accepted path are usually thrown away. Token Recycling (Luo et al. 2024) keeps
them: an adjacency matrix `[vocab, k]` holds, for each token, the k most likely
tokens the target last predicted after it. A draft is a fixed-shape tree
expanded breadth-first from the last token: a node's children are the first
few entries of its token's row. No draft model, no training; the matrix lives
as long as the drafter, so it keeps improving across requests.

The tree's shape is a static template (which child ranks exist at which depth):
wide near the root, where guesses are least certain, narrow further down. Rows
that were never filled are pruned from a draft instead of guessing token 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from orchestra.backends.local_engine.speculative.draft_tree import DraftTree
from orchestra.backends.local_engine.speculative.drafter import DraftSampling
from orchestra.backends.local_engine.speculative.verification import Verdict

#: Default template: at depth d every node gets `widths[d]` children, except that only the
#: first `deep_expand` children of a level are expanded further (the likeliest branches).
DEFAULT_WIDTHS = (4, 3, 2, 2, 1, 1, 1, 1)


def tree_template(widths: Sequence[int], expand: int = 2) -> list[tuple[int, int]]:
    """(parent index, child rank) for each non-root node, breadth-first.

    At depth d each expanded node of the previous level gets `widths[d]` children of
    ranks 0..widths[d]-1; only the `expand` best-ranked nodes of a level (by rank along
    their path) are expanded again, which keeps the tree linear in depth.
    """
    nodes: list[tuple[int, int]] = []
    level: list[tuple[int, tuple[int, ...]]] = [(0, ())]  # (node index, ranks along the path)
    for width in widths:
        following: list[tuple[int, tuple[int, ...]]] = []
        for parent, ranks in level:
            for rank in range(width):
                nodes.append((parent, rank))
                following.append((len(nodes), (*ranks, rank)))
        following.sort(key=lambda item: (sum(item[1]), item[1]))
        level = following[:expand]
    return nodes


class TokenRecyclingDrafter:
    """Tree drafts from an adjacency matrix of the target's own recent top-k predictions."""

    samples = False

    def __init__(self, vocab_size: int, top_k: int = 8, widths: Sequence[int] = DEFAULT_WIDTHS, expand: int = 2):
        if top_k < max(widths):
            raise ValueError(f"top_k ({top_k}) must cover the widest level ({max(widths)})")
        self.top_k = top_k
        self.template = tree_template(widths, expand)
        self.max_nodes = len(self.template) + 1
        self.adjacency = torch.zeros((vocab_size, top_k), dtype=torch.long)
        self.known = torch.zeros(vocab_size, dtype=torch.bool)

    def propose(self, context: Sequence[int], sampling: DraftSampling | None, stream: random.Random) -> DraftTree:
        adjacency, known = self.adjacency, self.known
        tokens, parents = [int(context[-1])], [-1]
        kept = {0: 0}  # template index -> tree index (pruned nodes are absent)
        for template_index, (parent, rank) in enumerate(self.template, start=1):
            at = kept.get(parent)
            if at is None or not bool(known[tokens[at]]):
                continue
            kept[template_index] = len(tokens)
            tokens.append(int(adjacency[tokens[at], rank]))
            parents.append(at)
        return DraftTree(tuple(tokens), tuple(parents))

    def observe(self, tree: DraftTree, logits: torch.Tensor, verdict: Verdict) -> None:
        """Every node's top-k become its token's new row (the freshest context wins)."""
        top = logits.topk(self.top_k, dim=-1).indices.cpu()
        ids = torch.tensor(tree.tokens)
        self.adjacency[ids] = top
        self.known[ids] = True

    def finish(self) -> None:
        """The matrix persists across requests: that is the point."""
