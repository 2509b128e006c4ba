"""Built-in techniques and scorers; importing this package registers them."""

from orchestra.techniques import (
    beam_search,
    best_first,
    critic,
    execution,
    fuse,
    judge,
    mcts,
    particle_filtering,
    pdr,
    probe_reward,
    prm_best_of_n,
    process_rewards,
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
    "critic", "execution", "fuse", "judge", "pdr", "rank", "refine", "sampling", "scoring",
    "selection", "unit_tests", "verify", "voting",
    # step-wise search with process reward models
    "beam_search", "best_first", "mcts", "particle_filtering", "prm_best_of_n", "probe_reward", "process_rewards",
]
