"""Architecture search over recipes (Archon-style), with optuna: spaces, objectives, replay, studies."""

from orchestra.search.evaluate import Evaluation, evaluate, rung_sizes
from orchestra.search.objectives import Objective
from orchestra.search.space import SearchSpace, SpaceError, load_space, space_from_dict
from orchestra.search.study import SearchSettings, open_study, run_worker, storage_url
from orchestra.search.winner import Winner, choose_winner, race

__all__ = [
    "Evaluation",
    "Objective",
    "SearchSettings",
    "SearchSpace",
    "SpaceError",
    "Winner",
    "choose_winner",
    "evaluate",
    "load_space",
    "open_study",
    "race",
    "run_worker",
    "rung_sizes",
    "space_from_dict",
    "storage_url",
]
