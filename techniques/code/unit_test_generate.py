"""Unit tests written by the model, to choose between code candidates by running them.

A model that cannot write a correct function every time can still write some
correct tests for it, and running candidates against those tests is a verdict
no model has to judge (CodeT, Chen et al., 2022). `unit_test_generate` asks the
model for assert statements from the problem alone (the function's signature
and docstring): tests written without seeing a candidate cannot copy its bugs.
`unit_test_evaluate` runs the candidates against them:

    nodes:
      - {id: code,  technique: sample, params: {n: 8, temperature: 0.8}}
      - {id: tests, technique: unit_test_generate, params: {n: 4}}
      - {id: best,  technique: unit_test_evaluate, inputs: [code, tests], params: {tests_from: tests}}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.code_execution.generated_tests import docstring_examples, parse_tests
from orchestra.code_execution.program import function_under_test
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.technique import technique

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
