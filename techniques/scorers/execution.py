"""The execution scorer: a candidate's code run against the problem's own hidden tests.

It is an oracle (it reads `Problem.tests`, which the model never sees): use it
to measure, or to get the upper bound a perfect test-based selector would reach
(`best_of_n` with `scorer: execution`), not to choose answers in a deployment --
that is what `unit_test_generate` / `unit_test_evaluate` are for.

Two shapes of tests are understood. HumanEval's -- a `check(candidate)` function
-- gives 1.0 when `check(entry_point)` passes and 0.0 otherwise, the same verdict
as the humaneval task's own scorer (`check_runner`: the check must return, exit
codes and printed markers count for nothing). Plain assert statements (MBPP's shape) are
run one by one and give the share that pass.
"""

from __future__ import annotations

import asyncio

from orchestra.candidate import Candidate
from orchestra.code_execution.assert_runner import run_asserts
from orchestra.code_execution.generated_tests import parse_tests
from orchestra.code_execution.check_runner import passes_check
from orchestra.code_execution.program import candidate_code, has_check_function, solution_module
from orchestra.code_execution.sandbox import SandboxLimits
from orchestra.context import Context
from orchestra.scorer import scorer


@scorer("execution", oracle=True)
async def execution(ctx: Context, candidate: Candidate) -> float:
    """Share of the problem's own tests the candidate's code passes (HumanEval: 1.0 or 0.0)."""
    problem = ctx.problem
    if not problem.tests:
        raise ValueError(f"the `execution` scorer needs a problem with tests; {problem.id!r} has none")
    code = candidate_code(candidate, ctx.task)
    if code is None:
        return 0.0
    limits: SandboxLimits = getattr(ctx.task, "sandbox_limits", None) or SandboxLimits()
    if has_check_function(problem):
        return 1.0 if await asyncio.to_thread(passes_check, problem, code, limits) else 0.0
    tests = parse_tests(problem.tests)
    if not tests:
        raise ValueError(f"problem {problem.id!r}: its tests define no check() and hold no assert statements")
    outcome = await asyncio.to_thread(
        run_asserts, solution_module(problem, code), tests,
        test_seconds=min(limits.wall_seconds, 10.0), memory_mb=limits.memory_mb,
    )
    return outcome.fraction
