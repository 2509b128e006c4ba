"""Process reward models (PRMs): rate each step of a partial solution.

Step-wise search (particle filtering, beam search, DVTS, MCTS, best-first) grows
answers step by step and needs a score for every partial answer, not only for
finished ones. A PRM returns one score per step, in [0, 1], higher meaning "this
prefix is more likely to end in a correct answer"; `aggregate` turns those into
the one number a search ranks or weights by.

A PRM is an async function registered by name with `@process_reward_model`.
It receives the node's `Context` (problem, models, budget: every model call a
PRM makes goes through `ctx.model(...)` and is metered like the generator's),
the spec the recipe wrote, and the steps so far. Steps carry what generation
already produced (token log-probabilities, the last token's hidden state) so
PRMs that read the generator itself cost no extra model call.

Built-in PRMs live in `orchestra.techniques`; third-party ones register through
the `orchestra.process_rewards` entry-point group.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.registry import Registry

if TYPE_CHECKING:
    from orchestra.context import Context

#: How per-step scores become one: the last step's, the worst step's, their product,
#: their mean, or `model`: the PRM scores the whole prefix as a single step.
Aggregation = Literal["last", "min", "prod", "mean", "model"]


@dataclass(frozen=True)
class Step:
    """One step of a partial solution, with what its generation already told us."""

    text: str
    #: The generator's log-probability of each token of the step, when known.
    logprobs: tuple[float, ...] | None = None
    #: The generator's final-layer hidden state at the step's last token, when known.
    hidden_state: tuple[float, ...] | None = None


class PRMSpec(BaseModel):
    """How a recipe names a PRM: `prm: {name: llm, model: judge, aggregate: min}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aggregate: Aggregation = "last"
    #: Model alias the PRM runs on (LLM-as-PRM, probe); default: the node's model.
    model: str | None = None
    #: PRM-specific settings, e.g. `{path: probe.safetensors}` for the trained probe.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        get_process_reward_model(name)
        return name


PRMFn = Callable[["Context", PRMSpec, Sequence[Step]], Awaitable[list[float]]]


@dataclass(frozen=True)
class ProcessRewardModel:
    name: str
    fn: PRMFn
    #: Backend capabilities the PRM's model must have (e.g. `logprobs`, `hidden_states`).
    requires: frozenset[str]


#: Every PRM by name: the built-ins, then the `orchestra.process_rewards` entry points.
PROCESS_REWARDS: Registry[ProcessRewardModel] = Registry(
    "process reward model", "orchestra.process_rewards", ["orchestra.techniques"]
)


def process_reward_model(name: str, *, requires: tuple[str, ...] = ()):
    """Register an async `(ctx, spec, steps) -> [score per step]` as a PRM."""
    return PROCESS_REWARDS.decorator(name, lambda fn: ProcessRewardModel(name, fn, frozenset(requires)))


def process_reward_models() -> dict[str, ProcessRewardModel]:
    return PROCESS_REWARDS.all()


def get_process_reward_model(name: str) -> ProcessRewardModel:
    return PROCESS_REWARDS.get(name)


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """One number from per-step scores (`model` expects the single whole-prefix score)."""
    if not scores:
        raise ValueError("no step scores to aggregate")
    if how in ("last", "model"):
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return sum(scores) / len(scores)


def split_steps(text: str, delimiter: str = "\n\n") -> list[Step]:
    """Cut a solution into steps at `delimiter`, each step keeping its delimiter.

    Step generation stops at the same delimiter, so a solution grown step by step
    and one split afterwards (reward training labels whole rollouts) agree.
    """
    if not delimiter:
        raise ValueError("the step delimiter must not be empty")
    pieces = [piece + delimiter for piece in text.split(delimiter)]
    pieces[-1] = pieces[-1][: -len(delimiter)]
    steps: list[str] = []
    for piece in pieces:
        if steps and not piece.strip():
            steps[-1] += piece  # blank runs belong to the step before: "".join(steps) == text
        elif piece:
            steps.append(piece)
    return [Step(text=s) for s in steps] or [Step(text=text)]


def prm_needs(params: BaseModel) -> frozenset[str]:
    """What the PRMs named by `params` (its `PRMSpec` fields) need of a backend, so a recipe
    pairing a PRM with a model that lacks it fails at validation."""
    needs: frozenset[str] = frozenset()
    for field_name in type(params).model_fields:
        value = getattr(params, field_name)
        if isinstance(value, PRMSpec):
            needs |= get_process_reward_model(value.name).requires
    return needs


async def score_steps(ctx: Context, spec: PRMSpec, steps: Sequence[Step]) -> float:
    """Score a partial solution with the PRM `spec` names, aggregated as it says."""
    prm = get_process_reward_model(spec.name)
    if spec.aggregate == "model":
        whole = Step(text="".join(step.text for step in steps))
        return aggregate(await prm.fn(ctx, spec, [whole]), "model")
    return aggregate(await prm.fn(ctx, spec, steps), spec.aggregate)
