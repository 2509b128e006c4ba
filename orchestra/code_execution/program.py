"""The programs a code problem runs: a candidate's code put together with the problem's function and tests.

A code problem shows the model a function stub (HumanEval's `prompt` metadata,
or a ```python block in the prompt) and names the function under test. A
candidate's reply may hold a whole function or only its body; either way the
module built here defines the function the way the stub does, so the same code
scores the same whether the task's scorer, the `execution` scorer or generated
unit tests run it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from orchestra.answers import AnswerFormat, extract_answer
from orchestra.candidate import Candidate
from orchestra.problem import Problem

if TYPE_CHECKING:
    from orchestra.tasks.base import Task

_STUB_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.DOTALL)
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_DEFINES_CHECK = re.compile(r"^def\s+check\s*\(", re.MULTILINE)


def function_under_test(problem: Problem) -> tuple[str, str]:
    """(stub, function name) for a code problem: HumanEval's `prompt`/`entry_point` metadata
    (the stub the model is shown), else the first Python block of the prompt and its last `def`."""
    stub = problem.metadata.get("prompt")
    name = problem.metadata.get("entry_point")
    if not stub:
        block = _STUB_BLOCK.search(problem.prompt)
        stub = block.group(1) if block else None
    if stub and not name:
        names = _DEF.findall(stub)
        name = names[-1] if names else None
    if not stub or not name:
        raise ValueError(
            f"problem {problem.id!r} shows no Python function to test "
            "(expected HumanEval metadata or a ```python block with a def in the prompt)"
        )
    return stub.rstrip(), name


def candidate_code(candidate: Candidate, task: Task | None = None) -> str | None:
    """The code a candidate holds: its extracted answer, else what the task (without a
    task: the first code block) reads from its text; None when that is empty."""
    code = candidate.answer
    if code is None:
        code = task.extract_answer(candidate.text) if task else extract_answer(
            candidate.text, AnswerFormat(strategy="code")
        )
    return code if code and code.strip() else None


def solution_module(problem: Problem, code: str) -> str:
    """A candidate's code as a module that defines the problem's function.

    The function stub the model was shown (`metadata["prompt"]`) always comes
    first: a bare function body completes it, and a full function redefines it
    while still seeing the stub's imports and helpers. A problem without a stub
    gets the code as it is.
    """
    prompt = problem.metadata.get("prompt")
    entry_point = problem.metadata.get("entry_point")
    if not prompt:
        return code
    defines = entry_point and re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
    return f"{prompt}\n\n{code}" if defines else f"{prompt}{code}"


def has_check_function(problem: Problem) -> bool:
    """Whether the problem's tests are HumanEval's shape: a `check(candidate)` function,
    and an entry point to pass it."""
    return bool(problem.metadata.get("entry_point") and _DEFINES_CHECK.search(problem.tests or ""))


def check_program(problem: Problem, code: str) -> str:
    """The program that runs a problem's own tests against `code`: the solution module,
    the tests, and `check(entry_point)` when the tests define `check` (HumanEval's shape)."""
    tests = problem.tests or ""
    call = f"\n\ncheck({problem.metadata['entry_point']})\n" if has_check_function(problem) else "\n"
    return f"{solution_module(problem, code)}\n\n{tests}{call}"
