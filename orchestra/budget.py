"""Budgets: limits on usage per problem and per run, enforced before each call.

A call is planned against every meter that covers it (its problem's and the
run's). Planning reserves the worst case the call could spend, shrinking
`max_tokens` to fit when it must, so concurrent problems can never jointly
overshoot a per-run limit; when the call returns, the reservation is swapped
for what was really spent. That needs the prompt's length before the call: a
prompt whose length is only estimated (a remote model without its tokenizer)
cannot be planned against a limit that counts prompt tokens, so such a call is
refused with `BudgetUnenforceable` instead of risking the limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from orchestra.usage import Usage


class Limits(BaseModel):
    """Upper bounds on usage; a field left out is unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int | None = Field(default=None, gt=0)
    prompt_tokens: int | None = Field(default=None, gt=0)
    completion_tokens: int | None = Field(default=None, gt=0)
    total_tokens: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0)
    seconds: float | None = Field(default=None, gt=0)


class Budget(BaseModel):
    """Limits for each problem and for the whole run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_problem: Limits = Field(default_factory=Limits)
    per_run: Limits = Field(default_factory=Limits)


class BudgetExceeded(Exception):
    """Raised instead of making a call that would cross a limit."""

    def __init__(self, scope: str, field_name: str, limit: float, needed: float):
        self.scope, self.field_name, self.limit, self.needed = scope, field_name, limit, needed
        super().__init__(
            f"{scope} budget: {field_name} limit {limit:g} would be crossed (needs {needed:g})"
        )


class BudgetUnenforceable(ValueError):
    """A limit counts prompt tokens, but the call's prompt length is only an estimate."""

    def __init__(self, scope: str, fields: list[str]):
        self.scope, self.fields = scope, fields
        super().__init__(
            f"{scope} budget limits {', '.join(fields)}, which needs each prompt's token count before the "
            "call, but this model's is only estimated (no tokenizer here): name its tokenizer "
            "(openai: `tokenizer:` in its `openai:` block) or limit completion_tokens or calls instead"
        )


#: Limits that count the prompt (flops only where the model's size is known).
_PROMPT_LIMITS = ("prompt_tokens", "total_tokens", "flops")


def _value(usage: Usage, name: str) -> float:
    return usage.total_tokens if name == "total_tokens" else getattr(usage, name)


@dataclass
class Meter:
    """Usage against one set of limits, with reservations for calls in flight."""

    scope: str
    limits: Limits
    used: Usage = field(default_factory=Usage)
    reserved: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)

    def headroom(self, name: str) -> float:
        limit = getattr(self.limits, name)
        if limit is None:
            return math.inf
        return limit - _value(self.used, name) - _value(self.reserved, name)

    def check_time(self) -> None:
        if self.limits.seconds is not None:
            elapsed = time.monotonic() - self.started
            if elapsed >= self.limits.seconds:
                raise BudgetExceeded(self.scope, "seconds", self.limits.seconds, elapsed)


@dataclass(frozen=True)
class CallPlan:
    """What a call may spend: the (possibly shrunk) max_tokens and its reservation."""

    max_tokens: int
    reservation: Usage
    shrunk: bool


def plan_call(
    meters: list[Meter],
    *,
    prompt_tokens: int,
    n: int,
    max_tokens: int,
    flops_per_token: float,
    prompt_estimated: bool = False,
) -> CallPlan:
    """Fit a call of `n` samples into every meter, or raise BudgetExceeded.

    `prompt_tokens` is every prompt token the call may send (n copies where its samples do
    not share one prefill). `max_tokens` is shrunk to the largest value whose worst case
    fits; a call that cannot produce even one token per sample is refused, and so is one
    whose `prompt_estimated` length a limit would have to count (BudgetUnenforceable).
    """
    allowed = max_tokens
    for meter in meters:
        meter.check_time()
        if prompt_estimated:
            counting = [
                name for name in _PROMPT_LIMITS
                if getattr(meter.limits, name) is not None and (name != "flops" or flops_per_token > 0)
            ]
            if counting:
                raise BudgetUnenforceable(meter.scope, counting)
        if meter.headroom("calls") < 1:
            raise BudgetExceeded(meter.scope, "calls", meter.limits.calls or 0, 1)
        if meter.headroom("prompt_tokens") < prompt_tokens:
            raise BudgetExceeded(
                meter.scope, "prompt_tokens", meter.limits.prompt_tokens or 0, prompt_tokens
            )
        per_sample = [
            meter.headroom("completion_tokens") / n,
            (meter.headroom("total_tokens") - prompt_tokens) / n,
        ]
        if flops_per_token > 0:
            per_sample.append((meter.headroom("flops") / flops_per_token - prompt_tokens) / n)
        fit = min(per_sample)
        if fit < 1:
            name = ("completion_tokens", "total_tokens", "flops")[per_sample.index(fit)]
            smallest = Usage(  # the least this call could cost: one token per sample
                prompt_tokens=prompt_tokens,
                completion_tokens=n,
                flops=flops_per_token * (prompt_tokens + n),
            )
            needed = _value(meter.used + meter.reserved + smallest, name)
            raise BudgetExceeded(meter.scope, name, getattr(meter.limits, name) or 0, needed)
        if fit < allowed:
            allowed = int(fit)
    reservation = Usage(
        calls=1,
        prompt_tokens=prompt_tokens,
        completion_tokens=n * allowed,
        flops=flops_per_token * (prompt_tokens + n * allowed),
    )
    for meter in meters:
        meter.reserved = meter.reserved + reservation
    return CallPlan(max_tokens=allowed, reservation=reservation, shrunk=allowed < max_tokens)


def settle_call(meters: list[Meter], plan: CallPlan, actual: Usage) -> None:
    """Swap a call's reservation for what it really spent (also after a failure)."""
    for meter in meters:
        meter.reserved = meter.reserved - plan.reservation
        meter.used = meter.used + actual
