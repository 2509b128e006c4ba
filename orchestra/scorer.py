"""Scorers: functions that rate a candidate, each writing `Candidate.scores[name]`.

Most scorers rate one candidate alone. A `pool` scorer rates all the candidates
of a node at once, because what it reads depends on the others (a trained
verifier reads how often an answer recurs in the pool). A scorer that takes an
`argument` is named `name:argument` in a recipe (`orm:verifiers/mine.safetensors`);
the scores are stored under the full name.

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

#: `(ctx, candidate) -> score`, or for a pool scorer `(ctx, candidates) -> scores`; a scorer that
#: takes an argument gets it as the keyword `argument` (None when the name gave none).
ScorerFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    oracle: bool
    requires: frozenset[str]
    pool: bool = False
    #: What may follow `name:` (for help and errors); None: the scorer takes no argument.
    argument: str | None = None


#: Every scorer by name: the built-ins, then the `orchestra.scorers` entry points.
SCORERS: Registry[Scorer] = Registry("scorer", "orchestra.scorers", ["orchestra.techniques"])


def scorer(
    name: str, *, oracle: bool = False, requires: tuple[str, ...] = (), pool: bool = False, argument: str | None = None
):
    """Register an async `(ctx, candidate) -> float` as a scorer (higher is better).

    With `pool=True` the function is `(ctx, candidates) -> list[float]`, called once
    for a node's candidates. With `argument` (a description of it), the scorer may be
    named `name:ARGUMENT` and gets the argument as the keyword `argument`.
    """
    return SCORERS.decorator(name, lambda fn: Scorer(name, fn, oracle, frozenset(requires), pool, argument))


def scorers() -> dict[str, Scorer]:
    return SCORERS.all()


def get_scorer(name: str) -> Scorer:
    """The scorer a (possibly `name:argument`) scorer name refers to."""
    return _resolve(name)[0]


def _resolve(name: str) -> tuple[Scorer, str | None]:
    base, colon, argument = name.partition(":")
    spec = SCORERS.get(base)
    if colon and spec.argument is None:
        raise ValueError(f"scorer {base!r} takes no argument, got {name!r}")
    if colon and not argument:
        raise ValueError(f"scorer name {name!r} has an empty argument after ':' (expected {spec.argument})")
    return spec, argument or None


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


def scorers_named(params: BaseModel) -> dict[str, str]:
    """The scorers `params` names, by field: its `ScorerName` fields that are set, defaults included
    (`{"scorer": "task"}`). Nested parameter models count, their fields as `outer.inner`."""
    named: dict[str, str] = {}
    for field_name, field in type(params).model_fields.items():
        value = getattr(params, field_name)
        if isinstance(value, str) and value and _names_a_scorer(field.annotation, field.metadata):
            named[field_name] = value
        for index, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, BaseModel):
                where = field_name if not isinstance(value, (list, tuple)) else f"{field_name}.{index}"
                named.update({f"{where}.{inner}": name for inner, name in scorers_named(item).items()})
    return named


def scorers_needs(params: BaseModel) -> frozenset[str]:
    """What the scorers named by `params` (its `ScorerName` fields) need of a backend."""
    needs: frozenset[str] = frozenset()
    for name in scorers_named(params).values():
        needs |= get_scorer(name).requires
    return needs


def oracle_scorers_named(params: BaseModel) -> dict[str, str]:
    """The oracle scorers `params` names, by field (see `scorers_named`)."""
    return {field: name for field, name in scorers_named(params).items() if get_scorer(name).oracle}


async def apply_scorer(ctx: Context, name: str, candidates: list[Candidate]) -> list[Candidate]:
    """Score each candidate that lacks `name`, keeping ids (the text is unchanged)."""
    spec, argument = _resolve(name)
    extra = {"argument": argument} if spec.argument is not None else {}
    if spec.pool:  # the pool is read as a whole: rescore all when any lacks the score
        if all(name in c.scores for c in candidates):
            return list(candidates)
        values = await spec.fn(ctx, list(candidates), **extra)
        return [c.with_score(name, value) for c, value in zip(candidates, values, strict=True)]
    out = []
    for candidate in candidates:
        if name not in candidate.scores:
            candidate = candidate.with_score(name, await spec.fn(ctx, candidate, **extra))
        out.append(candidate)
    return out
