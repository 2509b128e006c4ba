"""A step-wise search drawn as a tree of steps, from what it recorded or from its answers.

A search records every partial answer its PRM scored, with its parent, and its
resampling and pruning (trace `events`, see orchestra/step_events.py).
From those the whole tree is drawn: each node with its PRM score, a particle
copied by resampling with its number of copies, a partial answer never extended
(pruned, dropped by resampling) greyed, each answer right or wrong, and the
chosen answer's path (the search outputs it first) in bold.

Older runs, and PRM best-of-N (which scores only whole answers), record no tree;
then the part of it that reached an answer is redrawn from the finished answers:
answers that share their first steps share a branch (particles copied by
resampling, beams grown from one prefix), so splitting each answer at the step
delimiter and merging equal prefixes gives each branch with how many answers
passed through it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from orchestra.step_events import partial_id

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
    score: float | None = None  # its PRM score (drawn from events)
    copies: int = 0  # copies of it kept by a resampling
    pruned: bool = False  # never extended and no answer: dropped by pruning or resampling


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


def drawn_from_events(events: Sequence[dict[str, Any]] | None) -> bool:
    """Do these trace events describe a tree (every scored node's parent scored too)?"""
    scored = [e for e in events or () if e.get("kind") == "scored"]
    known = {e.get("id") for e in scored}
    return bool(scored) and all(e.get("parent") is None or e.get("parent") in known for e in scored)


def _build_from_events(
    events: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]], right: Callable[[str | None], bool | None]
) -> _Step:
    root = _Step("", 0)
    nodes: dict[str, _Step] = {}
    parents: dict[str, str | None] = {}
    for event in events:
        if event.get("kind") == "scored" and event.get("id") not in nodes:
            ident = str(event["id"])
            nodes[ident] = _Step(str(event.get("step", "")), int(event.get("depth", 1)), score=event.get("score"))
            parents[ident] = event.get("parent")
    for ident, node in nodes.items():
        nodes.get(parents[ident] or "", root).children[ident] = node
    answers = {partial_id(str(o.get("text", ""))): o for o in reversed(outputs)}  # a repeated text: its first
    for ident, output in answers.items():
        if ident in nodes:
            nodes[ident].leaf = output
            nodes[ident].right = right(output.get("answer"))
    for event in events:
        if event.get("kind") == "resample":
            for ident, copies in Counter(event.get("kept", [])).items():
                if ident in nodes:
                    nodes[ident].copies = max(nodes[ident].copies, copies)
    finished = {str(e["id"]) for e in events if e.get("kind") == "scored" and e.get("finished")}
    for ident, node in nodes.items():
        node.pruned = not node.children and node.leaf is None and ident not in finished
    ident = partial_id(str(outputs[0].get("text", ""))) if outputs else None
    while ident in nodes:
        nodes[ident].chosen = True
        ident = parents[ident]
    root.chosen = bool(outputs)
    _count_answers(root)
    return root


def _count_answers(step: _Step) -> int:
    step.passes = int(step.leaf is not None) + sum(_count_answers(c) for c in step.children.values())
    return step.passes


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
    outputs: Sequence[dict[str, Any]],
    delimiter: str | None,
    right: Callable[[str | None], bool | None],
    events: Sequence[dict[str, Any]] | None = None,
) -> Markup:
    """`svg.tree`: one circle per step (hover: its text), PRM scores, the chosen path in bold;
    `data-events="true"` when drawn from the search's recorded events."""
    from_events = drawn_from_events(events)
    root = _build_from_events(events or (), outputs, right) if from_events else _build(outputs, delimiter, right)
    _place(root, [0.0])
    steps = list(_walk(root))
    depth = max(s.depth for s in steps)
    leaves = sum(1 for s in steps if not s.children)
    width = int(2 * _PAD + max(leaves - 1, 1) * _DX + 40)
    height = int(2 * _PAD + depth * _DY + 28)

    def at(s: _Step) -> tuple[float, float]:
        return _PAD + 20 + s.x * _DX, _PAD + s.depth * _DY

    marker = ' data-events="true"' if from_events else ""
    parts = [(f'<svg class="tree" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="search tree"'
              f'{marker}>')]
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
        if s.pruned:
            classes.append("pruned")
        title = "start" if s is root else f"step {s.depth} ({s.passes} answer{'s' * (s.passes != 1)} through it):\n{s.text}"
        if s.score is not None:
            title += f"\nPRM score {s.score:.3g}"
        if s.copies > 1:
            title += f"\nresampling kept {s.copies} copies"
        if s.pruned:
            title += "\nnever extended (pruned or dropped by resampling)"
        if s.leaf is not None:
            scores = s.leaf.get("scores") or {}
            title += f"\nanswer: {s.leaf.get('answer')}  " + "  ".join(f"{k}={v:.3g}" for k, v in scores.items())
        parts.append(f'<g class="{" ".join(classes)}"><title>{escape(title)}</title>'
                     f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if s.leaf is None else 7}"/>')
        score = s.score if s.score is not None else (s.leaf or {}).get("scores", {}).get("prm")
        if score is not None and (s.leaf is not None or from_events):
            parts.append(f'<text class="score" x="{x:.1f}" y="{y + 20:.1f}" text-anchor="middle">{score:.2f}</text>')
        if s.copies > 1:
            parts.append(f'<text class="copies" x="{x + 9:.1f}" y="{y - 6:.1f}">×{s.copies}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
