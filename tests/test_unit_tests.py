"""Code techniques: parsing model-written tests, running them, unit_test_generate/evaluate on a
scripted model, the execution scorer, and (marked `model`) the whole recipe on the real model."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from fake_backend import FakeBackend, fake_backend  # noqa: F401  (fake_backend is a fixture)

import orchestra
from orchestra.backends import BACKENDS, Completion, GenerationRequest, GenerationResult, Prompt
from orchestra.candidate import Candidate
from orchestra.code_execution.assert_runner import AssertResults, run_asserts
from orchestra.code_execution.generated_tests import docstring_examples, parse_tests
from orchestra.code_execution.program import (
    candidate_code,
    check_program,
    function_under_test,
    has_check_function,
    solution_module,
)
from orchestra.context import Context
from orchestra.problem import Problem
from orchestra.recipe import Recipe, load_recipe
from orchestra.tasks import HumanEvalTask, load_task
from orchestra.techniques.code.unit_test_evaluate import score_by_tests
from orchestra.techniques.code.unit_test_generate import generation_messages
from orchestra.techniques.scorers.execution import execution
from orchestra.usage import Usage

ROOT = Path(__file__).resolve().parent.parent

# --- parsing generated tests --------------------------------------------------------------------


def test_asserts_in_a_code_block_are_split_canonicalised_and_deduplicated() -> None:
    reply = (
        "Here are some tests:\n```python\n"
        "assert add(1, 2) == 3\n"
        "assert add(1,2)==3\n"           # the same test, spelt differently
        "assert add(-1, 1) == 0, 'negative numbers'\n"  # the message is dropped
        "assert True\n"                  # tests nothing
        "assert len([1]) == 1\n"         # does not call the function
        "```\nThese cover the basics."
    )
    assert parse_tests(reply, "add") == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    assert parse_tests(reply, None) == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert len([1]) == 1"]
    assert parse_tests(reply, "add", limit=1) == ["assert add(1, 2) == 3"]


def test_no_code_block_prose_mixed_in() -> None:
    reply = (
        "Sure! 1. `assert add(2, 2) == 4`\n"
        "- assert add(0, 0) == 0\n"
        "The function should work, assert this is prose.\n"
        "Also check that assert add(7, 1) == 8"
    )
    assert parse_tests(reply, "add") == ["assert add(2, 2) == 4", "assert add(0, 0) == 0", "assert add(7, 1) == 8"]
    assert parse_tests("I cannot write tests for this function.", "add") == []
    assert parse_tests("", "add") == []


def test_syntax_errors_cost_only_the_broken_test() -> None:
    reply = (
        "```python\n"
        "assert add(1, 2) == 3\n"
        "assert add(1, 2 ==\n"           # broken
        "assert add([1,\n"
        "            2], 3) == 6\n"      # one test over two lines
        "def add(a, b) return a + b\n"   # broken code between tests
        ">>> add(4, 4)\n"                # a doctest transcript
        "8\n"
        "```\n"
    )
    assert parse_tests(reply, "add") == [
        "assert add(1, 2) == 3",
        "assert add([1, 2], 3) == 6",
        "assert add(4, 4) == 8",
    ]


def test_tests_inside_functions_classes_and_main_guards() -> None:
    reply = '''```python
import unittest

def add(a, b):
    assert isinstance(a, int)   # part of an implementation, not a test
    return a + b

def test_add():
    assert add(3, 4) == 7

class TestAdd(unittest.TestCase):
    def test_unittest_style(self):
        self.assertEqual(add(1, 1), 2)
        self.assertTrue(add(0, 1) == 1)
        self.assertFalse(add(0, 0))
        self.assertAlmostEqual(add(0.1, 0.2), 0.3)
        self.assertIn(add(1, 2), [3, 4])

if __name__ == "__main__":
    assert add(5, 5) == 10
```'''
    assert parse_tests(reply, "add") == [
        "assert add(3, 4) == 7",
        "assert add(1, 1) == 2",
        "assert add(0, 1) == 1",
        "assert not add(0, 0)",
        "assert round(add(0.1, 0.2) - 0.3, 7) == 0",
        "assert add(1, 2) in [3, 4]",
        "assert add(5, 5) == 10",
    ]


def test_unterminated_and_several_blocks() -> None:
    reply = "```python\nassert add(1, 1) == 2\n```\nand more:\n```\nassert add(2, 3) == 5\nassert add(9, 9) == 18"
    assert parse_tests(reply, "add") == ["assert add(1, 1) == 2", "assert add(2, 3) == 5", "assert add(9, 9) == 18"]


def test_docstring_examples_in_both_layouts() -> None:
    stub = '''from typing import List

def helper(x):
    """>>> helper(1)
    99
    """

def pick(xs: List[int], k: int) -> List[int]:
    """Return the k largest, largest first.
    >>> pick([1, 5, 3], 2)
    [5, 3]
    >>> pick([], 1)
    []
    >>> print(pick([1], 1))
    For example: pick([4, 4], 1) ==> [4]
    pick([2, 9], 1) -> [9]
    pick([7], 1) returns [7] # only one
    pick([1, 2], 2) = 1 + 1 = [2, 1]
    pick(xs, k) should be sorted
    """
'''
    assert docstring_examples(stub, "pick") == [
        "assert pick([1, 5, 3], 2) == [5, 3]",
        "assert pick([], 1) == []",
        "assert pick([4, 4], 1) == [4]",
        "assert pick([2, 9], 1) == [9]",
        "assert pick([7], 1) == [7]",
        "assert pick([1, 2], 2) == [2, 1]",
    ]
    assert docstring_examples(stub, "helper") == ["assert helper(1) == 99"]
    assert docstring_examples("def f(:", "f") == [] and docstring_examples("def f(x):\n    pass\n", "f") == []


def test_docstring_examples_of_humaneval_mostly_hold() -> None:
    """The examples are the problem statement's, and its reference solution passes almost all of them
    (the misses are the dataset's own wrong examples, or prose such as `f(n) == f(n - 1) + ...`)."""

    task = load_task("humaneval")
    problems = task.problems("test")
    found = passed = 0
    for problem in problems:
        examples = docstring_examples(problem.metadata["prompt"], problem.metadata["entry_point"])
        if examples:
            found += len(examples)
            canonical = solution_module(problem, problem.metadata["canonical_solution"])
            passed += sum(run_asserts(canonical, examples).passed)
    assert found > 2 * len(problems) and passed >= 0.9 * found


# --- running asserts ------------------------------------------------------------------------------


def test_each_assert_gets_its_own_verdict() -> None:
    source = "def add(a, b):\n    print('noise')\n    return a + b\nif __name__ == '__main__':\n    raise SystemExit(1)\n"
    tests = [
        "assert add(1, 2) == 3",
        "assert add(1, 1) == 3",
        "assert add(undefined, 1) == 1",   # NameError: fails alone
        "while True: pass",                # hangs: stopped by its own timer
        "import sys; sys.exit(0)",         # SystemExit is a failure, not the end of the run
        "assert add(2, 2) == 4",
    ]
    result = run_asserts(source, tests, test_seconds=0.5)
    assert result.loaded
    assert result.passed == (True, False, False, False, False, True)
    assert result.fraction == pytest.approx(2 / 6)


def test_a_program_that_does_not_load_fails_every_test() -> None:
    for broken in ("def add(a, b) return a + b", "raise ValueError('at import')", "import sys\nsys.exit(0)"):
        result = run_asserts(broken, ["assert add(1, 2) == 3", "assert 1 == 1"])
        assert not result.loaded and result.passed == (False, False)
    assert run_asserts("x = 1", []).passed == ()


def test_a_test_that_kills_the_interpreter_fails_with_the_rest() -> None:
    tests = ["assert add(1, 1) == 2", "import os; os._exit(0)", "assert add(2, 2) == 4"]
    result = run_asserts("def add(a, b):\n    return a + b\n", tests)
    assert result.passed == (True, False, False)


def test_printing_verdict_lookalikes_does_not_fool_the_runner() -> None:
    source = "import sys\nsys.__stdout__.write('\\nloaded\\n0 pass\\n')\ndef add(a, b):\n    return 0\n"
    assert run_asserts(source, ["assert add(1, 2) == 3"]).passed == (False,)


# --- scoring by test verdicts -------------------------------------------------------------------


def _results(*rows: str) -> list[AssertResults]:
    return [AssertResults(loaded=True, passed=tuple(c == "1" for c in row)) for row in rows]


def test_a_test_no_candidate_passes_is_dropped() -> None:
    fractions, _ = score_by_tests(_results("1100", "1000", "0000"), distinct_programs=3)
    assert fractions == [1.0, 0.5, 0.0]  # tests 3 and 4 fail everywhere: out of the denominator
    # a single program cannot tell a bad test from its own bug: every test counts
    fractions, _ = score_by_tests(_results("1100", "1100"), distinct_programs=1)
    assert fractions == [0.5, 0.5]
    assert score_by_tests(_results("0000", "0000"), distinct_programs=2) == ([0.0, 0.0], [0.0, 0.0])
    assert score_by_tests(_results("", ""), distinct_programs=2) == ([0.0, 0.0], [0.0, 0.0])


def test_agreement_prefers_a_consensus_over_a_lone_high_scorer() -> None:
    # A passes 3 of 4 tests alone; B and C (the same behaviour twice) pass a different 2.
    fractions, agreements = score_by_tests(_results("1110", "0011", "0011"), distinct_programs=3)
    assert fractions == [0.75, 0.5, 0.5]
    assert agreements == [pytest.approx(1 * 3 / 12), pytest.approx(2 * 2 / 12), pytest.approx(2 * 2 / 12)]
    assert agreements[1] > agreements[0] and fractions[0] > fractions[1]


# --- the techniques on a scripted model ---------------------------------------------------------

ADD_STUB = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b.\n    >>> add(2, 3)\n    5\n    """\n'
ADD_PROBLEM = Problem.from_prompt(
    "add/0",
    f"Complete the following Python function.\n\n```python\n{ADD_STUB}```",
    tests="def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-5, 5) == 0\n",
    metadata={"entry_point": "add", "prompt": ADD_STUB},
)

#: What the scripted model writes for code, by sample index (first-sample is wrong on purpose).
CODE = (
    "```python\ndef add(a, b):\n    return a - b\n```",           # 0 wrong
    "```python\ndef add(a, b):\n    return a + b\n```",           # 1 right
    "Here:\n```python\ndef add(a, b):\n    return a * b\n```",   # 2 wrong, passes add(2, 2) == 4
    "```python\ndef add(a, b):\n    return b + a\n```",           # 3 right, spelt differently
    "```python\ndef add(a, b):\n    while True:\n        pass\n```",  # 4 hangs
    "I don't know how to do that.",                                   # 5 no code at all
)
#: ... and for tests, by sample index.
TESTS = (
    "```python\nassert add(1, 2) == 3\nassert add(2, 2) == 4\n```",
    "Some checks: `assert add(1, 1) == 3` and also assert add(0, 5) == 5",  # the first is wrong
    "Sure, here are tests: add works.",                                       # none
    "```python\nassert add(3, 4) == 7\nassert add(3,\n```",                  # one good, one broken
)


class ScriptedCoder(FakeBackend):
    """Answers code prompts with CODE and test prompts with TESTS, by sample index."""

    async def complete(self, request: GenerationRequest, prepared: Prompt) -> GenerationResult:
        prompt = prepared.text
        script = TESTS if "assert statements that test" in prompt else CODE
        completions = tuple(
            Completion(text=script[(request.first_index + i) % len(script)], completion_tokens=10, finish_reason="stop")
            for i in range(request.n)
        )
        FakeBackend.log.calls.append(prompt)  # type: ignore[arg-type]
        tokens = prepared.tokens
        usage = Usage(calls=1, prompt_tokens=tokens, completion_tokens=10 * request.n)
        return GenerationResult(completions=completions, prompt_tokens=tokens, usage=usage)


@pytest.fixture
def coder(fake_backend):
    BACKENDS.add("scripted-coder", ScriptedCoder)
    return ScriptedCoder


def code_recipe(evaluate: dict | None = None, *, code_n: int = 6, tests_n: int = 4, inputs=("code", "tests")) -> Recipe:
    return Recipe.model_validate({
        "name": "unit-tests",
        "models": {"m": {"backend": "scripted-coder", "model": "coder"}},
        "nodes": [
            {"id": "code", "technique": "sample", "params": {"n": code_n, "max_tokens": 64}},
            {"id": "tests", "technique": "unit_test_generate", "params": {"n": tests_n, "max_tokens": 64}},
            {"id": "best", "technique": "unit_test_evaluate", "inputs": list(inputs),
             "params": {"tests_from": "tests", "test_seconds": 0.3, **(evaluate or {})}},
        ],
        "output": "best",
    })


def _trace(folder: Path) -> dict[str, dict]:
    return {t["node"]: t for t in map(json.loads, (folder / "trace.jsonl").read_text().splitlines())}


def test_generate_then_evaluate_picks_a_program_that_passes(tmp_path: Path, coder) -> None:
    task = load_task("humaneval?timeout=5")
    result = orchestra.run(code_recipe(), task, problems=[ADD_PROBLEM], cache=False, out=tmp_path / "run")
    (r,) = result.results
    assert r.status == "ok", r.error
    assert r.score == 1.0 and "a + b" in r.text  # sample 0 (a - b) was first; the tests moved sample 1 up
    trace = _trace(tmp_path / "run")
    suites = trace["tests"]["outputs"]
    assert [s["answer"] for s in suites] == [
        "assert add(1, 2) == 3\nassert add(2, 2) == 4",
        "assert add(1, 1) == 3\nassert add(0, 5) == 5",
        None,
        "assert add(3, 4) == 7",
    ]
    code_ids = [c["id"] for c in trace["code"]["outputs"]]
    ranked = trace["best"]["outputs"]
    # add(1, 1) == 3 fails everywhere and is dropped; 4 tests remain
    assert [code_ids.index(c["id"]) for c in ranked] == [1, 3, 2, 0, 4, 5]
    assert [c["scores"]["unit_tests"] for c in ranked] == [1.0, 1.0, 0.25, 0.0, 0.0, 0.0]
    assert ranked[0]["scores"]["unit_tests_agreement"] == pytest.approx(2 * 4 / (6 * 4))
    assert ranked[2]["scores"]["unit_tests_agreement"] == pytest.approx(1 * 1 / (6 * 4))
    assert all(c["node"] == "code" for c in ranked)  # only code candidates come out
    assert trace["best"]["usage"]["calls"] == 0  # executing tests costs no model calls
    test_prompt = next(p for p in FakeBackend.log.calls if "assert statements that test" in p)
    assert "count_vowels" in test_prompt and ADD_STUB.strip() in test_prompt  # the one-shot example, then the stub


def test_docstring_examples_as_the_only_tests(tmp_path: Path, coder) -> None:
    recipe = code_recipe()
    data = recipe.model_dump()
    data["nodes"][1]["params"].update(n=0, docstring_examples=True)
    task = load_task("humaneval?timeout=5")
    result = orchestra.run(Recipe.model_validate(data), task, problems=[ADD_PROBLEM], cache=False, out=tmp_path / "run")
    (r,) = result.results
    assert r.status == "ok" and r.score == 1.0 and r.usage_by_node.get("tests") is None  # no model call for tests
    trace = _trace(tmp_path / "run")
    assert [s["answer"] for s in trace["tests"]["outputs"]] == ["assert add(2, 3) == 5"]
    code_ids = [c["id"] for c in trace["code"]["outputs"]]
    assert [code_ids.index(c["id"]) for c in trace["best"]["outputs"]] == [1, 3, 0, 2, 4, 5]
    # no examples and no samples: an empty suite, and the order is left alone
    bare = ADD_PROBLEM.model_copy(update={"metadata": {"entry_point": "add", "prompt": "def add(a, b):\n    pass\n"}})
    (r,) = orchestra.run(Recipe.model_validate(data), task, problems=[bare], cache=False).results
    assert r.status == "ok" and r.text == CODE[0]


def test_top_k_and_rank_by(tmp_path: Path, coder) -> None:
    task = load_task("humaneval?timeout=5")
    result = orchestra.run(code_recipe({"top_k": 2, "rank_by": "pass_fraction"}), task,
                           problems=[ADD_PROBLEM], cache=False, out=tmp_path / "run")
    assert result.results[0].output_candidates == 2
    ranked = _trace(tmp_path / "run")["best"]["outputs"]
    assert [c["text"] for c in ranked] == [CODE[1], CODE[3]]


def test_without_usable_tests_the_first_sample_stays_first(tmp_path: Path, coder, monkeypatch) -> None:
    monkeypatch.setattr(f"{__name__}.TESTS", ("No tests, sorry.",))
    task = load_task("humaneval?timeout=5")
    result = orchestra.run(code_recipe(code_n=3, tests_n=2), task, problems=[ADD_PROBLEM], cache=False,
                           out=tmp_path / "run")
    assert result.results[0].status == "ok"
    ranked = _trace(tmp_path / "run")["best"]["outputs"]
    assert [c["text"] for c in ranked] == list(CODE[:3])
    assert all(c["scores"]["unit_tests"] == 0.0 == c["scores"]["unit_tests_agreement"] for c in ranked)


def test_miswired_nodes_fail_with_a_clear_error(coder) -> None:
    task = load_task("humaneval?timeout=5")
    wrong_source = code_recipe({"tests_from": "code"})  # the tests node's candidates then count as code
    data = code_recipe().model_dump()
    data["nodes"][2]["params"]["tests_from"] = "nowhere"
    (r,) = orchestra.run(Recipe.model_validate(data), task, problems=[ADD_PROBLEM], cache=False).results
    assert r.status == "error" and "tests_from='nowhere'" in r.error and "code, tests" in r.error
    # tests written as code: nothing passes those "programs" (asserts), but nothing crashes either
    assert orchestra.run(wrong_source, task, problems=[ADD_PROBLEM], cache=False).results[0].status == "ok"
    data = code_recipe().model_dump()
    data["nodes"][1]["inputs"] = ["code"]
    (r,) = orchestra.run(Recipe.model_validate(data), task, problems=[ADD_PROBLEM], cache=False).results
    assert r.status == "error" and "takes no inputs" in r.error


def test_evaluate_needs_two_inputs_and_a_tests_from() -> None:
    with pytest.raises(orchestra.RecipeError) as err:
        Recipe.model_validate({
            "name": "x",
            "nodes": [
                {"id": "code", "technique": "sample"},
                {"id": "best", "technique": "unit_test_evaluate", "inputs": ["code"], "params": {}},
            ],
        })
    assert "at least 2 input" in str(err.value) and "tests_from" in str(err.value)


def test_function_under_test_and_prompt() -> None:
    assert function_under_test(ADD_PROBLEM) == (ADD_STUB.rstrip(), "add")
    bare = Problem.from_prompt("p", "Fix this:\n```python\ndef helper(x):\n    pass\n\ndef solve(xs):\n    '''Sum.'''\n```")
    assert function_under_test(bare) == ("def helper(x):\n    pass\n\ndef solve(xs):\n    '''Sum.'''", "solve")
    with pytest.raises(ValueError, match="no Python function"):
        function_under_test(Problem.from_prompt("q", "What is 2 + 2?"))
    messages = generation_messages("def f(x):\n    pass", "f", example=False)
    assert len(messages) == 1 and "`f`" in messages[0].content
    assert [m.role for m in generation_messages("def f(x):\n    pass", "f")] == ["user", "assistant", "user"]


def test_candidate_code_and_the_check_program() -> None:
    """A candidate's code is its answer, else the first code block of its text; the check program
    is the stub, the code and the tests, with `check(entry_point)` only for HumanEval-shaped tests."""
    assert candidate_code(Candidate(text="ignored", answer="    return a + b\n")) == "    return a + b\n"
    fenced = Candidate(text="Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.")
    assert candidate_code(fenced) == "def add(a, b):\n    return a + b\n"
    assert candidate_code(Candidate(text="", answer="  \n")) is None
    program = check_program(ADD_PROBLEM, "    return a + b\n")
    assert program.startswith(ADD_STUB + "    return a + b\n") and program.endswith("\ncheck(add)\n")
    assert has_check_function(ADD_PROBLEM)
    asserts_only = ADD_PROBLEM.model_copy(update={"tests": "assert add(1, 2) == 3\n"})
    assert not has_check_function(asserts_only) and "check(" not in check_program(asserts_only, "    return 0\n")

def test_the_recipe_file_validates() -> None:
    recipe = load_recipe(ROOT / "recipes/code_unit_tests.yaml")
    techniques = {n.id: n.technique for n in recipe.nodes}
    assert techniques == {"code": "sample", "tests": "unit_test_generate", "best": "unit_test_evaluate"}
    assert recipe.output_node == "best" and recipe.node("best").params["tests_from"] == "tests"


# --- the execution scorer -----------------------------------------------------------------------


def _context(problem: Problem, task=None) -> Context:
    return Context(problem=problem, node="score", task=task, models={}, default_model=None, seed=0,
                   rng=random.Random(0))


def test_execution_scorer_runs_the_hidden_tests() -> None:
    from orchestra.scorer import get_scorer

    assert get_scorer("execution").oracle

    def score(ctx: Context, candidate: Candidate) -> float:
        return asyncio.run(execution(ctx, candidate))

    task: HumanEvalTask = load_task("humaneval?timeout=5")  # type: ignore[assignment]
    problem = task.problems("test", 1)[0]
    right = Candidate(text="", answer=problem.metadata["canonical_solution"])
    wrong = Candidate(text="", answer="    return None\n")
    no_code = Candidate(text="", answer="   ")
    assert score(_context(problem, task), right) == 1.0
    assert score(_context(problem, task), wrong) == 0.0
    assert score(_context(problem, task), no_code) == 0.0
    # without a task the code is taken from the text, and the default sandbox limits apply
    fenced = Candidate(text=f"```python\n{problem.metadata['prompt']}{problem.metadata['canonical_solution']}```")
    assert score(_context(problem), fenced) == 1.0

    mbpp = Problem.from_prompt("m", "Write add.", tests="assert add(1, 2) == 3\nassert add(2, 2) == 4\n")
    half = Candidate(text="```python\ndef add(a, b):\n    return a * b\n```")
    assert score(_context(mbpp), half) == 0.5
    with pytest.raises(ValueError, match="needs a problem with tests"):
        score(_context(Problem.from_prompt("n", "hi")), half)


def test_best_of_n_by_execution_is_the_oracle_selector(coder) -> None:
    recipe = Recipe.model_validate({
        "name": "oracle",
        "models": {"m": {"backend": "scripted-coder", "model": "coder"}},
        "nodes": [
            {"id": "code", "technique": "sample", "params": {"n": 4}},
            {"id": "pick", "technique": "best_of_n", "inputs": ["code"], "params": {"scorer": "execution"}},
        ],
    })
    (r,) = orchestra.run(recipe, load_task("humaneval?timeout=5"), problems=[ADD_PROBLEM], cache=False).results
    assert r.status == "ok" and r.score == 1.0 and r.text == CODE[1]


# --- end to end on the real model ---------------------------------------------------------------


@pytest.mark.model
def test_unit_test_recipe_on_the_real_model(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes/code_unit_tests.yaml")
    data = recipe.model_dump()
    data["models"] = {alias: {**spec, "dtype": "float32"} for alias, spec in data["models"].items()}
    data["nodes"][0]["params"].update(n=3, max_tokens=96)
    data["nodes"][1]["params"].update(n=2, max_tokens=96)
    data["nodes"][2]["params"]["top_k"] = None
    small = Recipe.model_validate(data)
    result = orchestra.run(small, "humaneval", limit=1, cache=False, out=tmp_path / "run")
    (r,) = result.results
    assert r.status == "ok", r.error
    assert r.score in (0.0, 1.0) and r.output_candidates == 3
    assert r.usage_by_node["tests"].calls == 1 and r.usage_by_node["tests"].completion_tokens > 0
    assert "best" not in r.usage_by_node  # running tests is not a model call
    trace = _trace(tmp_path / "run")
    for suite in trace["tests"]["outputs"]:
        if suite["answer"] is not None:  # whatever the model wrote, what was kept is runnable asserts
            for test in suite["answer"].splitlines():
                assert test.startswith("assert ") and "candidate" not in test
                compile(test, "<test>", "exec")
    ranked = trace["best"]["outputs"]
    assert {c["id"] for c in ranked} == {c["id"] for c in trace["code"]["outputs"]}
    assert all(0.0 <= c["scores"]["unit_tests"] <= 1.0 for c in ranked)
    keys = [(-c["scores"]["unit_tests_agreement"], -c["scores"]["unit_tests"]) for c in ranked]
    assert keys == sorted(keys)
