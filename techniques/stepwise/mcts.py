"""Monte Carlo tree search over steps, with PRM values instead of rollouts.

Each node of the tree is a partial answer. An iteration walks down from the
root by UCT — the child maximising Q + exploration x sqrt(ln N(parent) / N(child)),
with Q the mean value backed up through it and N the visit counts — to a node
not expanded yet, generates `branching` next steps under it, scores each new
child with the PRM, and backs each child's score up to the root. The PRM's
value stands in for the random rollout of classic MCTS: a rollout to the end of
the answer would cost a whole answer per node, a PRM call costs one prefill.

A finished answer is a leaf that is never expanded; a subtree whose leaves are
all finished is exhausted and no longer selected. The search stops when
`rollouts` answers have finished, the tree is exhausted, or it has generated
rollouts x max_steps steps (the budget unit every step-wise search shares). The
answer is picked among the finished ones (`select`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import Field

from orchestra.backends import CONTINUATION
from orchestra.budget import BudgetExceeded
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.stepwise._step_generation import PartialAnswer
from orchestra.techniques.stepwise._step_search import Scored, TreeSearchParams, answer_candidates, search_parts
from orchestra.step_events import partial_id


class MCTSParams(TreeSearchParams):
    exploration: float = Field(default=1.0, ge=0.0, description="UCT's exploration constant c.")


@dataclass(eq=False)
class TreeNode:
    partial: PartialAnswer
    score: float
    parent: TreeNode | None = None
    children: list[TreeNode] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    exhausted: bool = False

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else self.score

    def uct(self, exploration: float) -> float:
        parent_visits = self.parent.visits if self.parent else self.visits
        return self.value + exploration * math.sqrt(math.log(max(parent_visits, 1)) / max(self.visits, 1))


def back_up(node: TreeNode | None, value: float) -> None:
    """Add one visit of `value` to `node` and every ancestor."""
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


def mark_exhausted(node: TreeNode | None) -> None:
    """A finished leaf is exhausted; so is every ancestor whose children all are."""
    while node is not None and (node.partial.finished or (node.children and all(c.exhausted for c in node.children))):
        node.exhausted = True
        node = node.parent


def select_leaf(root: TreeNode, exploration: float) -> TreeNode:
    """Walk down by UCT to a node with no children (not exhausted)."""
    node = root
    while node.children:
        node = max((c for c in node.children if not c.exhausted), key=lambda c: c.uct(exploration))
    return node


def leaves(node: TreeNode) -> list[TreeNode]:
    if not node.children:
        return [node]
    return [leaf for child in node.children for leaf in leaves(child)]


@technique("mcts", MCTSParams, requires=(CONTINUATION,), min_inputs=0)
async def mcts(ctx: Context, inputs: list[Candidate], params: MCTSParams) -> list[Candidate]:
    """Monte Carlo tree search over steps: UCT selection, PRM values backed up, no rollouts."""
    generator, prm = search_parts(ctx, params)
    root = TreeNode(PartialAnswer(), 0.0)
    finished: list[Scored] = []
    allowance = params.rollouts * params.max_steps
    try:
        while not root.exhausted and len(finished) < params.rollouts and generator.steps_generated + params.branching <= max(allowance, params.branching):
            leaf = select_leaf(root, params.exploration)
            ctx.record({"kind": "expand", "id": partial_id(leaf.partial.text) if leaf.partial.steps else None,
                        "depth": len(leaf.partial.steps)})
            kids = await generator.extend(leaf.partial, params.branching)
            for kid, score in zip(kids, await prm.score_all(kids)):
                child = TreeNode(kid, score, parent=leaf)
                leaf.children.append(child)
                back_up(child, score)
                if kid.finished:
                    finished.append((kid, score))
            for child in leaf.children:
                mark_exhausted(child)
    except BudgetExceeded:
        if not root.children:
            raise
    if not finished:  # out of steps or budget before any answer ended: the best partial ones
        finished = [(leaf.partial.cut_off(), leaf.score) for leaf in leaves(root) if leaf.partial.steps]
    return answer_candidates(ctx, finished, params)
