"""Archon's construction rules: which orders of layers make a working recipe.

Archon (Saad-Falcon et al., 2024) only builds architectures that make sense:
candidates must exist before anything critiques, ranks or fuses them; a critic's
strengths and weaknesses are only worth paying for when a ranker or fuser reads
them next; generated unit tests are only worth paying for when an evaluator runs
them next. The space sampler consults these rules *before* it asks the sampler
for a layer's technique, offering only choices that still lead to a valid
recipe, so an invalid combination is never built or run. Each technique
declares its own rules where it is registered (`must_follow`,
`must_be_followed_by`, `side_generator` in `orchestra.technique`).

A step is a (label, technique) pair: the label names a space option (several
options may share a technique, e.g. a plain and a verifier-weighted vote).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestra.technique import get_technique

def is_generator(technique: str) -> bool:
    """A technique that needs no input candidates draws them from the problem itself."""
    return get_technique(technique).min_inputs == 0


def step_problem(
    prefix: Sequence[tuple[str, str]], label: str, technique: str, requires: Sequence[str] = ()
) -> str | None:
    """Why `technique` may not come after `prefix` (None: it may)."""
    previous = prefix[-1][1] if prefix else None
    candidates_exist = any(not is_side_generator(t) and is_generator(t) for _, t in prefix)
    if is_generator(technique) and not is_side_generator(technique):
        if prefix:
            return f"{technique} generates candidates, so it must be the first layer"
    elif not is_side_generator(technique) and not candidates_exist:
        return f"{technique} needs candidates: a generation layer must come first"
    if is_side_generator(technique) and not candidates_exist:
        return f"{technique} must come after the generation layer"
    wanted = get_technique(technique).must_follow
    if wanted and previous not in wanted:
        return f"{technique} must come right after {' or '.join(sorted(wanted))}"
    follow = get_technique(previous).must_be_followed_by if previous else frozenset()
    if follow and technique not in follow:
        return f"{previous} must be followed by {' or '.join(sorted(follow))}, not {technique}"
    earlier = {name for step in prefix for name in step}
    missing = [name for name in requires if name not in earlier]
    if missing:
        return f"{label} requires an earlier {', '.join(missing)} layer"
    return None


def ending_problem(steps: Sequence[tuple[str, str]]) -> str | None:
    """Why a finished sequence is not a recipe (None: it is)."""
    if not steps:
        return "no layers"
    last = steps[-1][1]
    follow = get_technique(last).must_be_followed_by
    if follow:
        return f"{last} must be followed by {' or '.join(sorted(follow))}"
    return None


def sequence_problems(steps: Sequence[tuple[str, str, Sequence[str]]]) -> list[str]:
    """Every rule a full sequence of (label, technique, requires) breaks."""
    problems = []
    done: list[tuple[str, str]] = []
    for label, technique, requires in steps:
        problem = step_problem(done, label, technique, requires)
        if problem:
            problems.append(problem)
        done.append((label, technique))
    ending = ending_problem(done)
    if ending:
        problems.append(ending)
    return problems


def is_side_generator(technique: str) -> bool:
    """A generator of something other than answers (tests): it sits beside the candidate chain."""
    return get_technique(technique).side_generator

