"""Code candidates ranked by the model-written unit tests they pass (CodeT, Chen et al., 2022).

`unit_test_evaluate` takes two inputs, the code candidates and the test
candidates (from `unit_test_generate`), tells them apart by the node that
produced each (`tests_from`), runs every distinct program against every
distinct test in the sandbox, and ranks the code candidates by what they pass.

Bad tests: a small model often writes a wrong expected value. A test that no
candidate passes is dropped before scoring (when there are at least two
distinct programs): it cannot tell candidates apart, and it is more likely
wrong than every candidate is. Beyond that, `rank_by` picks how much a test is
trusted: `pass_fraction` counts every remaining test equally; `agreement` is
CodeT's dual execution agreement, which groups candidates by the exact set of
tests they pass and scores a group by (candidates in it) x (tests it passes),
so a test only matters as much as the candidates that agree with it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.code_execution.assert_runner import AssertResults, run_asserts
from orchestra.code_execution.generated_tests import parse_tests
from orchestra.code_execution.program import candidate_code, function_under_test, solution_module
from orchestra.context import Context
from orchestra.technique import technique

#: Score names the evaluate node writes into `Candidate.scores`.
PASS_FRACTION = "unit_tests"
AGREEMENT = "unit_tests_agreement"


class UnitTestEvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tests_from: str = Field(description="Id of the node whose candidates are the tests; every other input is code.")
    rank_by: Literal["agreement", "pass_fraction"] = Field(
        default="agreement",
        description="agreement: CodeT dual execution agreement; pass_fraction: share of tests passed.",
    )
    top_k: int | None = Field(default=None, ge=1, description="Code candidates to pass on, best first (None: all).")
    max_tests: int = Field(default=40, ge=1, description="Distinct tests run, in order of first appearance.")
    test_seconds: float = Field(default=1.0, gt=0, le=60, description="Time limit of each test (and of loading the code).")
    memory_mb: int = Field(default=1024, ge=64, description="Address-space cap of each test process.")


@technique(
    "unit_test_evaluate", UnitTestEvaluateParams, needs_model=False, min_inputs=2,
    must_follow=("unit_test_generate",),
)
async def unit_test_evaluate(ctx: Context, inputs: list[Candidate], params: UnitTestEvaluateParams) -> list[Candidate]:
    """Run the code candidates against the generated tests and keep the best (top_k), best first.

    Writes `scores["unit_tests"]` (share of the kept tests passed) and
    `scores["unit_tests_agreement"]` (CodeT's consensus score, in [0, 1]) on every
    code candidate. Ties keep input order, so with no useful tests the first
    candidate stays first.
    """
    suites = [c for c in inputs if c.node == params.tests_from]
    if not suites:
        sources = sorted({c.node for c in inputs}) or ["none"]
        raise ValueError(
            f"unit_test_evaluate: no input candidate came from tests_from={params.tests_from!r}; "
            f"the inputs came from: {', '.join(sources)}"
        )
    codes = [c for c in inputs if c.node != params.tests_from]
    if not codes:
        return []
    _, name = function_under_test(ctx.problem)
    tests = _distinct_tests(suites, name, params.max_tests)
    programs = [_program(ctx, c) for c in codes]
    distinct = list(dict.fromkeys(p for p in programs if p is not None))
    runs = await asyncio.gather(
        *(asyncio.to_thread(run_asserts, p, tests, test_seconds=params.test_seconds, memory_mb=params.memory_mb)
          for p in distinct)
    )
    verdicts = dict(zip(distinct, runs))
    failed_everything = AssertResults(loaded=False, passed=(False,) * len(tests))
    results = [verdicts.get(p, failed_everything) if p is not None else failed_everything for p in programs]
    fractions, agreements = score_by_tests(results, distinct_programs=len(distinct))
    scored = [
        c.with_score(PASS_FRACTION, f).with_score(AGREEMENT, a) for c, f, a in zip(codes, fractions, agreements)
    ]
    primary, secondary = (AGREEMENT, PASS_FRACTION) if params.rank_by == "agreement" else (PASS_FRACTION, AGREEMENT)
    ranked = sorted(scored, key=lambda c: (-c.scores[primary], -c.scores[secondary]))  # stable: ties keep order
    return ranked[: params.top_k] if params.top_k else ranked


def score_by_tests(results: list[AssertResults], *, distinct_programs: int) -> tuple[list[float], list[float]]:
    """(pass fraction, CodeT agreement) per candidate from its test verdicts.

    Tests no candidate passes are dropped first when at least two distinct programs
    ran (see the module docstring). Agreement groups candidates -- duplicates count,
    that is the consensus -- by the set of kept tests they pass; a group scores
    (its size) x (tests in its set), normalised by (candidates) x (kept tests).
    """
    if not results or not results[0].passed:
        return [0.0] * len(results), [0.0] * len(results)
    width = len(results[0].passed)
    kept = [t for t in range(width) if distinct_programs < 2 or any(r.passed[t] for r in results)]
    if not kept:
        return [0.0] * len(results), [0.0] * len(results)
    passed_sets = [frozenset(t for t in kept if r.passed[t]) for r in results]
    group_sizes: dict[frozenset[int], int] = {}
    for passed in passed_sets:
        group_sizes[passed] = group_sizes.get(passed, 0) + 1
    scale = len(results) * len(kept)
    fractions = [len(p) / len(kept) for p in passed_sets]
    agreements = [group_sizes[p] * len(p) / scale for p in passed_sets]
    return fractions, agreements


def _distinct_tests(suites: list[Candidate], name: str, limit: int) -> list[str]:
    tests: list[str] = []
    for suite in suites:
        text = suite.answer if suite.answer is not None else suite.text
        for test in parse_tests(text, name):
            if test not in tests:
                tests.append(test)
                if len(tests) >= limit:
                    return tests
    return tests


def _program(ctx: Context, candidate: Candidate) -> str | None:
    """The candidate's code as a module defining the function, or None when it has no code."""
    code = candidate_code(candidate, ctx.task)
    return None if code is None else solution_module(ctx.problem, code)
