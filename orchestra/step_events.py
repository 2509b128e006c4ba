"""What a step-wise search records of its work (`Context.record`), so its tree can be drawn.

A search's output holds only its finished answers; these events hold the rest.
Every partial answer is named by `partial_id`, a short hash of its text, so a
node's parent is the id of its text minus its last step, and the page finds
the chosen answer's node from the output's text. The kinds:

- `scored`: one per distinct partial answer the PRM scored (`PRMScorer` records
  it): `id`, `parent` (null under the root), `depth` (its steps), `step` (its last
  step's text, cut to `STEP_RECORDED` characters), `score`, `finished`;
- `resample`: particle filtering resampled at `depth`; `kept` lists the ids of
  the particles after it (an id twice: copied twice);
- `prune`: beam search or DVTS kept the best at `depth`: `kept` and `dropped` ids;
- `expand`: MCTS or best-first expanded the node `id` (null: the root), in order.
"""

from __future__ import annotations

import hashlib

from orchestra.context import Context

#: Characters of a step's text kept in its event (a run of 200 problems stays small).
STEP_RECORDED = 300


def partial_id(text: str) -> str:
    """The short, stable name of the partial answer with this text."""
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def record_scored(ctx: Context, steps: tuple, score: float, finished: bool) -> None:
    """A `scored` event for the partial answer of `steps` (objects with a `.text`)."""
    texts = [step.text for step in steps]
    ctx.record(
        {
            "kind": "scored",
            "id": partial_id("".join(texts)),
            "parent": partial_id("".join(texts[:-1])) if len(texts) > 1 else None,
            "depth": len(texts),
            "step": texts[-1][:STEP_RECORDED] if texts else "",
            "score": score,
            "finished": finished,
        }
    )


def ids(texts) -> list[str]:
    """The ids of partial answers, given their texts."""
    return [partial_id(text) for text in texts]
