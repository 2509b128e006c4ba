"""Scorers: functions that rate a candidate, each writing `Candidate.scores[name]`.

Built-in scorers live in `orchestra.techniques.scoring`; third-party ones
register through the `orchestra.scorers` entry-point group (an entry point names
a module whose import registers them). A scorer marked `oracle` reads the
reference answer: fine for measuring, not for choosing answers in a deployment.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from orchestra.candidate import Candidate
from orchestra.errors import unknown_name

if TYPE_CHECKING:
    from orchestra.context import Context

ScorerFn = Callable[["Context", Candidate], Awaitable[float]]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    oracle: bool
    requires: frozenset[str]


_SCORERS: dict[str, Scorer] = {}
_loaded = False


def scorer(name: str, *, oracle: bool = False, requires: tuple[str, ...] = ()):
    """Register an async `(ctx, candidate) -> float` as a scorer (higher is better)."""

    def register(fn: ScorerFn) -> ScorerFn:
        _SCORERS[name] = Scorer(name, fn, oracle, frozenset(requires))
        return fn

    return register


def scorers() -> dict[str, Scorer]:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("orchestra.techniques")
        for ep in entry_points(group="orchestra.scorers"):
            ep.load()
    return dict(_SCORERS)


def get_scorer(name: str) -> Scorer:
    known = scorers()
    if name in known:
        return known[name]
    raise KeyError(unknown_name("scorer", name, known))


def _known_scorer(name: str) -> str:
    try:
        get_scorer(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return name


#: A parameter type for technique params that name a scorer: misspellings fail validation.
ScorerName = Annotated[str, AfterValidator(_known_scorer)]


def scorers_needs(*names: str | None) -> frozenset[str]:
    """What the named scorers need of a backend (for a Params' `capabilities_needed`)."""
    return frozenset().union(*(get_scorer(n).requires for n in names if n))


async def apply_scorer(ctx: Context, name: str, candidates: list[Candidate]) -> list[Candidate]:
    """Score each candidate that lacks `name`, keeping ids (the text is unchanged)."""
    spec = get_scorer(name)
    out = []
    for candidate in candidates:
        if name not in candidate.scores:
            candidate = candidate.with_score(name, await spec.fn(ctx, candidate))
        out.append(candidate)
    return out
