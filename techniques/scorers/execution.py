"""The execution scorer: a candidate's code run against the problem's own hidden tests.

It is an oracle (it reads `Problem.tests`, which the model never sees): use it
to measure, or to get the upper bound a perfect test-based selector would reach
(`best_of_n` with `scorer: execution`), not to choose answers in a deployment --
that is what `unit_test_generate` / `unit_test_evaluate` are for.

Two shapes of tests are understood. HumanEval's -- a `check(candidate)` function
-- gives 1.0 when `check(entry_point)` passes and 0.0 otherwise, the same verdict
as the humaneval task's own scorer. Plain assert statements (MBPP's shape) are
run one by one and give the share that pass.
"""

from __future__ import annotations

import asyncio
import re

from orchestra.answers import AnswerFormat, extract_answer
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.sandbox import SandboxLimits, run_python
from orchestra.scorer import scorer
from orchestra.tasks.humaneval_task import check_program, solution_module
from orchestra.techniques.assert_runner import run_asserts
from orchestra.techniques.generated_tests import parse_tests

_DEFINES_CHECK = re.compile(r"^def\s+check\s*\(", re.MULTILINE)


@scorer("execution", oracle=True)
async def execution(ctx: Context, candidate: Candidate) -> float:
    """Share of the problem's own tests the candidate's code passes (HumanEval: 1.0 or 0.0)."""
    problem = ctx.problem
    if not problem.tests:
        raise ValueError(f"the `execution` scorer needs a problem with tests; {problem.id!r} has none")
    code = candidate.answer
    if code is None:
        code = ctx.task.extract_answer(candidate.text) if ctx.task else extract_answer(
            candidate.text, AnswerFormat(strategy="code")
        )
    if code is None or not code.strip():
        return 0.0
    limits: SandboxLimits = getattr(ctx.task, "sandbox_limits", None) or SandboxLimits()
    if _DEFINES_CHECK.search(problem.tests) and problem.metadata.get("entry_point"):
        result = await asyncio.to_thread(run_python, check_program(problem, code), limits)
        return 1.0 if result.ok else 0.0
    tests = parse_tests(problem.tests)
    if not tests:
        raise ValueError(f"problem {problem.id!r}: its tests define no check() and hold no assert statements")
    outcome = await asyncio.to_thread(
        run_asserts, solution_module(problem, code), tests,
        test_seconds=min(limits.wall_seconds, 10.0), memory_mb=limits.memory_mb,
    )
    return outcome.fraction
