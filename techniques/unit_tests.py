"""Unit tests written by the model, and executed, to choose between code candidates.

A model that cannot write a correct function every time can still write some
correct tests for it, and running candidates against those tests is a verdict
no model has to judge (CodeT, Chen et al., 2022). Two nodes:

- `unit_test_generate` asks the model for assert statements from the problem
  alone (the function's signature and docstring): tests written without seeing
  a candidate cannot copy its bugs.
- `unit_test_evaluate` takes two inputs, the code candidates and the test
  candidates, tells them apart by the node that produced each (`tests_from`),
  runs every distinct program against every distinct test in the sandbox, and
  ranks the code candidates by what they pass.

    nodes:
      - {id: code,  technique: sample, params: {n: 8, temperature: 0.8}}
      - {id: tests, technique: unit_test_generate, params: {n: 4}}
      - {id: best,  technique: unit_test_evaluate, inputs: [code, tests], params: {tests_from: tests}}

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
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.answers import AnswerFormat, extract_answer
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message, Problem
from orchestra.tasks.humaneval_task import solution_module
from orchestra.technique import technique
from orchestra.techniques.assert_runner import AssertResults, run_asserts
from orchestra.techniques.generated_tests import docstring_examples, parse_tests

#: Score names the evaluate node writes into `Candidate.scores`.
PASS_FRACTION = "unit_tests"
AGREEMENT = "unit_tests_agreement"

_STUB_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.DOTALL)
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)

# The function first and the request last, nearest to where the model starts writing: with the
# request first, the default model mostly rewrites the function instead of testing it.
_INSTRUCTION = (
    "```python\n{stub}\n```\n\nWrite five assert statements that test `{name}`: each calls it with "
    "concrete arguments and compares the result with what the docstring says it must return. "
    "Reply with the asserts only, in a ```python code block."
)
_EXAMPLE_STUB = '''def count_vowels(word: str) -> int:
    """Return how many of the letters a, e, i, o, u the lowercase word contains.
    >>> count_vowels("hello")
    2
    """'''
_EXAMPLE_TESTS = '''```python
assert count_vowels("hello") == 2
assert count_vowels("sky") == 0
assert count_vowels("aeiou") == 5
assert count_vowels("") == 0
assert count_vowels("banana") == 3
```'''


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


def generation_messages(stub: str, name: str, *, example: bool = True) -> tuple[Message, ...]:
    """The chat that asks for tests; with `example`, one worked example first, since a small
    model follows a format it has seen far better than one it is told."""
    ask = Message(role="user", content=_INSTRUCTION.format(name=name, stub=stub))
    if not example:
        return (ask,)
    return (
        Message(role="user", content=_INSTRUCTION.format(name="count_vowels", stub=_EXAMPLE_STUB)),
        Message(role="assistant", content=_EXAMPLE_TESTS),
        ask,
    )


class UnitTestGenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=4, ge=0, le=256, description="Test suites to sample (0: docstring examples only).")
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    max_tests: int = Field(default=10, ge=1, description="Asserts kept from each suite.")
    example: bool = Field(default=True, description="Show one worked example before the problem.")
    docstring_examples: bool = Field(
        default=False,
        description="Also pass on the examples in the function's docstring, as one more suite "
        "(public: the model sees them in the problem).",
    )


@technique(
    "unit_test_generate", UnitTestGenerateParams, min_inputs=0,
    side_generator=True, must_be_followed_by=("unit_test_evaluate",),
)
async def unit_test_generate(ctx: Context, inputs: list[Candidate], params: UnitTestGenerateParams) -> list[Candidate]:
    """Sample n suites of assert statements for the problem's function (from its signature and docstring).

    Each output candidate keeps the raw reply as `text` and the parsed, distinct,
    compilable asserts that call the function as `answer` (one per line; None when
    the reply held none). With `docstring_examples`, a first extra candidate (no
    model call) holds the examples the docstring itself gives. It takes no inputs:
    tests that never saw a candidate cannot share its bugs.
    """
    if inputs:
        raise ValueError(
            "unit_test_generate writes tests from the problem alone and takes no inputs; "
            "wire the code candidates into unit_test_evaluate instead"
        )
    stub, name = function_under_test(ctx.problem)
    drafts = [] if params.n == 0 else await ctx.sample(
        n=params.n,
        messages=generation_messages(stub, name, example=params.example),
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
    )
    suites = []
    for draft in drafts:
        tests = parse_tests(draft.text, name, limit=params.max_tests)
        suites.append(draft.model_copy(update={"answer": "\n".join(tests) if tests else None}))
    if params.docstring_examples:
        examples = docstring_examples(stub, name)
        if examples:
            listing = "\n".join(examples)
            suites.insert(0, Candidate(text=f"Examples from the docstring:\n{listing}", node=ctx.node, answer=listing))
    if not suites:  # n=0 and no examples: an empty suite, so evaluate still sees where tests come from
        suites.append(Candidate(text="(the docstring gives no examples)", node=ctx.node, answer=None))
    return suites


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
    code = candidate.answer
    if code is None:
        code = ctx.task.extract_answer(candidate.text) if ctx.task else extract_answer(
            candidate.text, AnswerFormat(strategy="code")
        )
    if code is None or not code.strip():
        return None
    return solution_module(ctx.problem, code)
