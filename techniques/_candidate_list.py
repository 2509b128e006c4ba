"""How candidates are shown to a model inside a prompt: numbered [1]..[k], clipped.

Critics, rankers, fusers and distillers all quote candidates back to the model;
one format keeps their prompts consistent, and the numbers a ranker parses are
the numbers this module printed. Long candidates are clipped from the front:
the final answer sits at the end of a reply, and it is what a judge needs most.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestra.candidate import Candidate

#: Characters of one candidate's text shown in a prompt (the end is kept).
MAX_CANDIDATE_CHARS = 1500


def clip(text: str, max_chars: int = MAX_CANDIDATE_CHARS) -> str:
    """`text` stripped, keeping its last `max_chars` characters."""
    text = text.strip()
    return text if len(text) <= max_chars else "..." + text[-max_chars:].lstrip()


def critique_of(candidate: Candidate) -> str | None:
    """The critique a critic attached to this candidate (keyed by its own id)."""
    return candidate.critiques.get(candidate.id)


def numbered(candidates: Sequence[Candidate], *, with_critiques: bool = False) -> str:
    """Candidates as "[1] text" blocks, each followed by its critique when asked and present."""
    blocks = []
    for number, candidate in enumerate(candidates, start=1):
        block = f"[{number}] {clip(candidate.text) or '(empty)'}"
        critique = critique_of(candidate) if with_critiques else None
        if critique:
            block += f"\nCritique of [{number}]: {clip(critique)}"
        blocks.append(block)
    return "\n\n".join(blocks)
