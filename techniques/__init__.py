"""Built-in techniques and scorers; importing this package registers them."""

from orchestra.techniques import (
    critic,
    execution,
    fuse,
    judge,
    pdr,
    probe_reward,
    rank,
    refine,
    sampling,
    scoring,
    selection,
    unit_tests,
    verify,
    voting,
)

__all__ = [
    "critic", "execution", "fuse", "judge", "pdr", "probe_reward", "rank", "refine", "sampling", "scoring",
    "selection", "unit_tests", "verify", "voting",
]
