"""Techniques: async functions over candidate pools, registered by name.

A technique is `async def fn(ctx, inputs, params) -> list[Candidate]`, where
`params` is an instance of the technique's pydantic `Params` model. Built-in
techniques live in the `orchestra.techniques` package; third-party ones
register through the `orchestra.techniques` entry-point group (see
`orchestra.registry`).

What other parts of orchestra need to know about a technique is declared where
it is registered: the capabilities it needs, how many inputs it takes, which
techniques must come before or after it in a searched architecture, and
whether `orchestra scale` may scale its sample count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.registry import Registry
from orchestra.scorer import scorers_needs

if TYPE_CHECKING:
    from orchestra.context import Context


class _ModelAliasesMark:
    """Marks a params field whose value lists model aliases of the recipe."""


#: A parameter type for techniques that call several models (e.g. `ensemble`):
#: recipe validation checks every alias is defined and has what the technique needs.
ModelAliases = Annotated[
    list[str],
    _ModelAliasesMark(),
    Field(description="Model aliases of the recipe; empty means every model the recipe defines."),
]


def model_aliases_of(params: BaseModel) -> list[str] | None:
    """The aliases named by a `ModelAliases` field of `params`, or None when it has none
    (an empty list means "all of the recipe's models")."""
    for field_name, field in type(params).model_fields.items():
        if any(isinstance(m, _ModelAliasesMark) for m in field.metadata):
            return list(getattr(params, field_name))
    return None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


TechniqueFn = Callable[["Context", list[Candidate], Any], Awaitable[list[Candidate]]]


@dataclass(frozen=True)
class Technique:
    """A registered technique and what it declares about itself.

    `requires` names backend capabilities (see `orchestra.backends`) so a recipe
    that pairs the technique with a backend lacking them fails at validation;
    `needs_for` adds what particular params need.
    `min_inputs` is how many input nodes it needs (0 for generators).
    `must_follow` / `must_be_followed_by` are Archon's construction rules (a critique
    only pays off when a ranker or fuser reads it next); a `side_generator` makes
    something other than answers (tests) and sits beside the candidate chain;
    `scales_samples` marks a generator whose `n` `orchestra scale` may vary: each of its
    calls asks for exactly n samples from index 0, so a smaller n replays a prefix of the
    pool (techniques whose n is a cap, stopping early, are not scalable).
    """

    name: str
    fn: TechniqueFn
    params: type[BaseModel]
    requires: frozenset[str]
    needs_model: bool
    min_inputs: int
    must_follow: frozenset[str] = frozenset()
    must_be_followed_by: frozenset[str] = frozenset()
    side_generator: bool = False
    scales_samples: bool = False

    def needs_for(self, params: BaseModel) -> frozenset[str]:
        """What the technique needs with these params: its own `requires` plus what any
        scorer or process reward model its params name needs (e.g. the logprobs
        `mean_logprob` reads). Checked
        against the node's model (by default the recipe's only model)."""
        from orchestra.reward.process_reward import prm_needs

        return self.requires | scorers_needs(params) | prm_needs(params)

    @property
    def summary(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


#: Every technique by name: the built-ins, then the `orchestra.techniques` entry points.
TECHNIQUES: Registry[Technique] = Registry("technique", "orchestra.techniques", ["orchestra.techniques"])


def technique(
    name: str,
    params: type[BaseModel] = NoParams,
    *,
    requires: tuple[str, ...] = (),
    needs_model: bool = True,
    min_inputs: int = 1,
    must_follow: tuple[str, ...] = (),
    must_be_followed_by: tuple[str, ...] = (),
    side_generator: bool = False,
    scales_samples: bool = False,
) -> Callable[[TechniqueFn], TechniqueFn]:
    """Register an async function as a technique under `name`."""
    return TECHNIQUES.decorator(
        name,
        lambda fn: Technique(
            name, fn, params, frozenset(requires), needs_model, min_inputs,
            frozenset(must_follow), frozenset(must_be_followed_by), side_generator, scales_samples,
        ),
    )


def techniques() -> dict[str, Technique]:
    """All registered techniques, built-in and third-party."""
    return TECHNIQUES.all()


def get_technique(name: str) -> Technique:
    """Look a technique up; an unknown name's error lists the closest known names."""
    return TECHNIQUES.get(name)
