"""Scorers: functions that rate a candidate, each writing `Candidate.scores[name]`.

Built-in scorers live in `orchestra.techniques.scorers`; third-party ones
register through the `orchestra.scorers` entry-point group (an entry point names
a module whose import registers them). A scorer marked `oracle` reads the
reference answer: fine for measuring, not for choosing answers in a deployment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel

from orchestra.candidate import Candidate
from orchestra.registry import Registry

if TYPE_CHECKING:
    from orchestra.context import Context

ScorerFn = Callable[["Context", Candidate], Awaitable[float]]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    oracle: bool
    requires: frozenset[str]


#: Every scorer by name: the built-ins, then the `orchestra.scorers` entry points.
SCORERS: Registry[Scorer] = Registry("scorer", "orchestra.scorers", ["orchestra.techniques"])


def scorer(name: str, *, oracle: bool = False, requires: tuple[str, ...] = ()):
    """Register an async `(ctx, candidate) -> float` as a scorer (higher is better)."""
    return SCORERS.decorator(name, lambda fn: Scorer(name, fn, oracle, frozenset(requires)))


def scorers() -> dict[str, Scorer]:
    return SCORERS.all()


def get_scorer(name: str) -> Scorer:
    return SCORERS.get(name)


def _known_scorer(name: str) -> str:
    get_scorer(name)  # UnknownName is a ValueError: pydantic reports it on the field
    return name


_NAMES_A_SCORER = AfterValidator(_known_scorer)

#: A parameter type for technique params that name a scorer: misspellings fail
#: validation, and what the scorer needs of a backend counts as the node's need.
ScorerName = Annotated[str, _NAMES_A_SCORER]


def _names_a_scorer(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field is typed `ScorerName` (also inside `ScorerName | None`)."""
    return _NAMES_A_SCORER in metadata or any(
        _names_a_scorer(arg, list(getattr(arg, "__metadata__", ()))) for arg in get_args(annotation)
    )


def scorers_needs(params: BaseModel) -> frozenset[str]:
    """What the scorers named by `params` (its `ScorerName` fields) need of a backend."""
    needs: frozenset[str] = frozenset()
    for field_name, field in type(params).model_fields.items():
        value = getattr(params, field_name)
        if value and _names_a_scorer(field.annotation, field.metadata):
            needs |= get_scorer(value).requires
    return needs


async def apply_scorer(ctx: Context, name: str, candidates: list[Candidate]) -> list[Candidate]:
    """Score each candidate that lacks `name`, keeping ids (the text is unchanged)."""
    spec = get_scorer(name)
    out = []
    for candidate in candidates:
        if name not in candidate.scores:
            candidate = candidate.with_score(name, await spec.fn(ctx, candidate))
        out.append(candidate)
    return out
