"""Parameter ranges of a search space: a fixed value, a set of choices, or a numeric interval.

In YAML a parameter is either a plain value (fixed: not searched) or a mapping
with exactly one of `choices`, `int` or `float`:

    n: {int: [1, 16], log: true}
    temperature: {choices: [0.3, 0.5, 0.7]}
    max_tokens: 128

Discrete choices are the better default for anything that reaches a `sample`
node: every distinct temperature is a distinct pool of samples, while a few
fixed values let trials replay each other's generations from the cache.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Suggests(Protocol):
    """The part of `optuna.Trial` a space needs (FixedTrial and tests' fakes fit too)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...


class Choices(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    choices: list[Any] = Field(min_length=1)

    def corners(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: Suggests, name: str) -> Any:
        if len(self.choices) == 1:
            return self.choices[0]
        return trial.suggest_categorical(name, self.choices)


class IntRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    bounds: tuple[int, int] = Field(alias="int")
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        low, high = self.bounds
        if low > high:
            raise ValueError(f"int range [{low}, {high}] is empty")
        if self.log and low < 1:
            raise ValueError("a log int range must start at 1 or more")
        return self

    def corners(self) -> list[Any]:
        return list(dict.fromkeys(self.bounds))

    def suggest(self, trial: Suggests, name: str) -> int:
        low, high = self.bounds
        if low == high:
            return low
        return trial.suggest_int(name, low, high, step=self.step, log=self.log)


class FloatRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    bounds: tuple[float, float] = Field(alias="float")
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        low, high = self.bounds
        if low > high:
            raise ValueError(f"float range [{low}, {high}] is empty")
        if self.log and low <= 0:
            raise ValueError("a log float range must start above 0")
        return self

    def corners(self) -> list[Any]:
        return list(dict.fromkeys(self.bounds))

    def suggest(self, trial: Suggests, name: str) -> float:
        low, high = self.bounds
        if low == high:
            return low
        return trial.suggest_float(name, low, high, step=self.step, log=self.log)


class Fixed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Any

    def corners(self) -> list[Any]:
        return [self.value]

    def suggest(self, trial: Suggests, name: str) -> Any:
        return self.value


Range = Choices | IntRange | FloatRange | Fixed

_RANGE_KEYS = {"choices": Choices, "int": IntRange, "float": FloatRange}


def parse_range(value: Any) -> Range:
    """A YAML value as a range: a mapping keyed by choices/int/float is searched, anything else is fixed."""
    if isinstance(value, (Choices, IntRange, FloatRange, Fixed)):
        return value
    if isinstance(value, dict):
        kinds = [key for key in _RANGE_KEYS if key in value]
        if len(kinds) > 1:
            raise ValueError(f"a range has one of choices/int/float, not {' and '.join(kinds)}")
        if kinds:
            return _RANGE_KEYS[kinds[0]].model_validate(value)
    return Fixed(value=value)


def is_searched(value: Range) -> bool:
    return len(value.corners()) > 1 or isinstance(value, (IntRange, FloatRange)) and value.bounds[0] != value.bounds[1]
