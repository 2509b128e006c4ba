"""A step-wise search drawn as a tree of steps, from the finished answers it output.

A search's trace records its finished answers (each with its PRM score and step
count), not every partial answer it tried. Answers that share their first steps
share a branch: particles copied by resampling, beams grown from one prefix,
MCTS leaves under one node. So splitting each answer at the search's step
delimiter and merging equal prefixes redraws the part of the tree that reached
an answer: each branch says how many answers passed through it, each leaf its
PRM score and whether it is right, and the chosen answer's path (the search
outputs it first) is highlighted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

#: The techniques whose candidates are grown step by step (techniques/stepwise).
STEPWISE_TECHNIQUES = frozenset({"particle_filtering", "beam_search", "dvts", "mcts", "best_first", "prm_best_of_n"})
#: Leaves drawn at most; a larger search draws its first answers (the chosen one among them).
LEAVES_DRAWN = 48

_DX, _DY, _PAD = 32, 46, 16


@dataclass
class _Step:
    text: str
    depth: int
    children: dict[str, _Step] = field(default_factory=dict)
    passes: int = 0  # finished answers through this step
    chosen: bool = False
    leaf: dict[str, Any] | None = None  # the finished answer ending here
    right: bool | None = None
    x: float = 0.0


def split_steps(text: str, delimiter: str | None) -> list[str]:
    """The steps of an answer, each keeping its delimiter (as the search generated them)."""
    if not delimiter:
        return [text]
    pieces = text.split(delimiter)
    steps = [piece + delimiter for piece in pieces[:-1]]
    if pieces[-1]:
        steps.append(pieces[-1])
    return steps or [text]


def _build(outputs: Sequence[dict[str, Any]], delimiter: str | None, right: Callable[[str | None], bool | None]) -> _Step:
    root = _Step("", 0)
    for rank, output in enumerate(outputs[:LEAVES_DRAWN]):
        node = root
        node.passes += 1
        node.chosen |= rank == 0
        for step in split_steps(str(output.get("text", "")), delimiter):
            node = node.children.setdefault(step, _Step(step, node.depth + 1))
            node.passes += 1
            node.chosen |= rank == 0
        if node.leaf is None:
            node.leaf = output
            node.right = right(output.get("answer"))
    return root


def _place(step: _Step, next_x: list[float]) -> None:
    """Leaves left to right in order; a step above its children's middle."""
    if not step.children:
        step.x = next_x[0]
        next_x[0] += 1
        return
    for child in step.children.values():
        _place(child, next_x)
    xs = [c.x for c in step.children.values()]
    step.x = (min(xs) + max(xs)) / 2


def _walk(step: _Step):
    yield step
    for child in step.children.values():
        yield from _walk(child)


def step_tree_svg(
    outputs: Sequence[dict[str, Any]], delimiter: str | None, right: Callable[[str | None], bool | None]
) -> Markup:
    """`svg.tree`: one circle per step (hover: its text), leaves with PRM score, the chosen path in bold."""
    root = _build(outputs, delimiter, right)
    _place(root, [0.0])
    steps = list(_walk(root))
    depth = max(s.depth for s in steps)
    leaves = sum(1 for s in steps if not s.children)
    width = int(2 * _PAD + max(leaves - 1, 1) * _DX + 40)
    height = int(2 * _PAD + depth * _DY + 28)

    def at(s: _Step) -> tuple[float, float]:
        return _PAD + 20 + s.x * _DX, _PAD + s.depth * _DY

    parts = [(f'<svg class="tree" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="search tree">')]
    for s in steps:
        for child in s.children.values():
            (x1, y1), (x2, y2) = at(s), at(child)
            cls = "edge chosen" if child.chosen else "edge"
            parts.append(f'<line class="{cls}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                         f'stroke-width="{1 + min(child.passes, 8) * 0.5:.1f}"/>')
    for s in steps:
        x, y = at(s)
        classes = ["step"]
        if s.chosen:
            classes.append("chosen")
        if s.leaf is not None:
            classes.append({True: "right", False: "wrong", None: "unknown"}[s.right])
        title = "start" if s is root else f"step {s.depth} ({s.passes} answer{'s' * (s.passes != 1)} through it):\n{s.text}"
        if s.leaf is not None:
            scores = s.leaf.get("scores") or {}
            title += f"\nanswer: {s.leaf.get('answer')}  " + "  ".join(f"{k}={v:.3g}" for k, v in scores.items())
        parts.append(f'<g class="{" ".join(classes)}"><title>{escape(title)}</title>'
                     f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if s.leaf is None else 7}"/>')
        if s.leaf is not None and "prm" in (s.leaf.get("scores") or {}):
            parts.append(f'<text x="{x:.1f}" y="{y + 20:.1f}" text-anchor="middle">{s.leaf["scores"]["prm"]:.2f}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
