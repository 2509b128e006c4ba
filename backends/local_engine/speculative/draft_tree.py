"""A draft tree and the attention layout that verifies all of its branches in one forward.

Every drafter hands the verifier a tree of candidate continuations: a chain is
the tree with one child per node. Node 0 is the root — the last token already
accepted, whose KV is not yet computed — and every other node is a drafted
token whose parent is an earlier node (parents precede children, breadth-first
or depth-first, it does not matter). The target model runs all nodes at once:

- each node attends to the whole committed prefix and to its own ancestors
  (and itself) among the nodes — the *ancestor mask* — so siblings never see
  each other and every node's logits are those of the chain along its path;
- a node's rotary position is the prefix length plus its depth, not its index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DraftTree:
    """Tokens of the root (index 0) and drafted nodes, each node's parent (-1 for the root).

    `draft_probs`, when a drafter sampled its tokens (a chain), holds the distribution
    each drafted token was drawn from: row i for node i + 1, `[nodes - 1, vocab]` — what
    lossless rejection sampling compares the target against. Deterministic drafters
    leave it out.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    draft_probs: torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens or len(self.tokens) != len(self.parents):
            raise ValueError("a draft tree needs a root and one parent per token")
        if self.parents[0] != -1:
            raise ValueError("node 0 is the root; its parent is -1")
        for index, parent in enumerate(self.parents[1:], start=1):
            if not 0 <= parent < index:
                raise ValueError(f"node {index}'s parent {parent} must be an earlier node")

    @classmethod
    def chain(cls, root: int, drafted: list[int] | tuple[int, ...], draft_probs: torch.Tensor | None = None) -> DraftTree:
        """The root followed by `drafted` in a line (prompt lookup, a draft model)."""
        return cls(tuple([root, *drafted]), tuple(range(-1, len(drafted))), draft_probs)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return all(parent == index - 1 for index, parent in enumerate(self.parents))

    def depths(self) -> list[int]:
        depth = [0] * len(self.tokens)
        for index, parent in enumerate(self.parents[1:], start=1):
            depth[index] = depth[parent] + 1
        return depth

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.tokens]
        for index, parent in enumerate(self.parents[1:], start=1):
            kids[parent].append(index)
        return kids

    def path_to(self, node: int) -> list[int]:
        """Node indices from the root down to `node`."""
        path = [node]
        while self.parents[path[-1]] != -1:
            path.append(self.parents[path[-1]])
        return path[::-1]


def ancestor_mask(parents: tuple[int, ...] | list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """`[nodes, nodes]` bool: entry (i, j) is True when node j is node i or one of its ancestors.

    Built row by row from the parent's row (parents precede children), so it costs
    one row copy per node instead of a walk per pair.
    """
    count = len(parents)
    mask = torch.zeros((count, count), dtype=torch.bool)
    for index, parent in enumerate(parents):
        if parent >= 0:
            mask[index] = mask[parent]
        mask[index, index] = True
    return mask.to(device)


def depth_positions(tree: DraftTree, start: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rotary position of each node: `start` (the root's position) plus its depth."""
    return torch.tensor(tree.depths(), device=device) + start
