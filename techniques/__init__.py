"""Built-in techniques and scorers; importing this package registers them."""

from orchestra.techniques import (
    critic,
    fuse,
    judge,
    pdr,
    rank,
    refine,
    sampling,
    scoring,
    selection,
    verify,
    voting,
)

__all__ = ["critic", "fuse", "judge", "pdr", "rank", "refine", "sampling", "scoring", "selection", "verify", "voting"]
