"""Tasks by spec string: `KIND[:NAME][?key=value&key2=value2]`.

A spec names a task and its options in one string, so it fits on a command
line, in a recipe file and in a results table. Examples:

    reasoning_gym:basic_arithmetic?max_terms=2&operators=[+,-]
    humaneval?timeout=5
    jsonl:data/qa.jsonl?prompt=question&answer_field=label&answer=marker

Option values are YAML scalars (`2` is an int, `[+,-]` a list, `true` a bool)
and may be %-escaped (`%26` for `&`). `answer`, `marker`, `pattern` and
`compare` (`normalized` or `math`) build the task's AnswerFormat and are taken
verbatim (regexes are not YAML); every other option goes to the task.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import ValidationError

from orchestra.answers import AnswerFormat
from orchestra.tasks.base import TASK_KINDS, Task

_FORMAT_KEYS = {"answer": "strategy", "marker": "marker", "pattern": "pattern", "compare": "compare"}
#: Other spellings of built-in kinds that users type.
_SPELLINGS = {"reasoning-gym": "reasoning_gym", "human_eval": "humaneval", "human-eval": "humaneval"}


#: The task commands default to: 2-term, 1-digit sums and differences, hard enough for a 135M model.
DEFAULT_TASK = "reasoning_gym:chain_sum?min_terms=2&max_terms=2&max_digits=1"

def known_task_kinds() -> list[str]:
    """The task kinds `load_task` understands (other spellings such as `reasoning-gym` not listed)."""
    return TASK_KINDS.names()


def _value(raw: str) -> Any:
    """A YAML scalar or list; text that is not valid YAML stays text."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """Split a spec into (kind, name or None, options); option values typed, format options kept as text."""
    head, _, query = spec.strip().partition("?")
    kind, colon, name = head.partition(":")
    kind = kind.strip().lower()
    if not kind:
        raise ValueError(f"empty task kind in spec {spec!r}; expected KIND[:NAME][?key=value&...]")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, equals, raw = part.partition("=")
        key = unquote(key).strip()
        if not key:
            raise ValueError(f"empty option name in spec {spec!r}")
        if key in options:
            raise ValueError(f"option {key!r} given twice in spec {spec!r}")
        if not equals:
            options[key] = True  # a bare flag: `?instruct` means instruct=true
        else:
            raw = unquote(raw)
            options[key] = raw if key in _FORMAT_KEYS else _value(raw)
    return kind, (name.strip() if colon else None) or None, options


def _answer_format(default: AnswerFormat, options: dict[str, Any], spec: str) -> AnswerFormat:
    overrides = {_FORMAT_KEYS[k]: options.pop(k) for k in list(options) if k in _FORMAT_KEYS}
    if not overrides:
        return default
    try:
        fmt = AnswerFormat(**{**default.model_dump(), **overrides})
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        raise ValueError(f"bad answer format in spec {spec!r}: {problems}") from None
    if fmt.strategy == "regex" and not fmt.pattern:
        raise ValueError(f"answer=regex needs a pattern=... option in spec {spec!r}")
    return fmt


def _check_options(factory: Callable[..., Task], kind: str, options: dict[str, Any]) -> None:
    """Name the offending key instead of surfacing a TypeError from a constructor."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the task validates its own open-ended options (e.g. dataset configs)
    accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("spec", "answer_format")]
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"unknown option {key!r} for task kind {kind!r}; "
                f"accepted: {', '.join(accepted + list(_FORMAT_KEYS))}"
            )


def load_task(spec: str) -> Task:
    """The task a spec names, e.g. `load_task("reasoning_gym:chain_sum?max_terms=2")`."""
    kind, name, options = parse_spec(spec)
    kind = _SPELLINGS.get(kind, kind)
    try:
        cls = TASK_KINDS.get(kind)
    except KeyError as err:
        raise ValueError(f"{err} in spec {spec!r}") from None
    fmt = _answer_format(cls.default_answer_format, options, spec)
    _check_options(cls, kind, options)
    if cls.name_is is not None:
        if name is None:
            raise ValueError(f"task kind {kind!r} needs {cls.name_is}: {kind}:NAME (spec {spec!r})")
        return cls(name, spec=spec, answer_format=fmt, **options)  # type: ignore[call-arg]
    if name is not None:
        raise ValueError(f"task kind {kind!r} takes no name, got {name!r} (spec {spec!r})")
    return cls(spec=spec, answer_format=fmt, **options)  # type: ignore[call-arg]
