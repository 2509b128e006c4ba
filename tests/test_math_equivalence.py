"""Math answer equivalence (`compare=math`, math-verify): comparison, task scoring, and a
majority vote over differently written equal answers. Scripted backend; no model; fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_backend import fake_backend  # noqa: F401  (fixture)

import orchestra
from orchestra.math_equivalence import math_equal
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.tasks import load_task
from test_engine import lines, traces

HALVES = ("1/2", "0.5", "\\frac{1}{2}")


@pytest.mark.parametrize(
    ("reference", "answer"),
    [
        ("1/2", "0.5"), ("0.5", "\\frac{1}{2}"), ("\\frac{1}{2}", "1/2"), ("$\\dfrac{1}{2}$", "0.50"),
        ("\\{1, 2\\}", "\\{2,1\\}"), ("[0, 1)", "[0,1)"), ("(0,\\infty)", "(0, \\infty)"),
        ("3", "x=3"), ("\\sqrt{2}", "\\frac{\\sqrt{8}}{2}"), ("1000", "1,000"), ("Paris", "paris."),
    ],
)
def test_math_equal_accepts_equal_values(reference: str, answer: str) -> None:
    assert math_equal(reference, answer)


@pytest.mark.parametrize(
    ("reference", "answer"),
    [
        ("1/2", "2"), ("0.5", "-0.5"), ("1/3", "0.33"), ("[0, 1)", "[0, 1]"), ("\\{1, 2\\}", "\\{1, 3\\}"),
        ("(1, 2)", "(2, 1)"), ("\\sqrt{2}", "2"), ("cat", "tac"), ("Paris", "London"),
    ],
)
def test_math_equal_rejects_different_values(reference: str, answer: str) -> None:
    assert not math_equal(reference, answer)


def _halves_task(tmp_path: Path, compare: str | None) -> str:
    path = tmp_path / "half.jsonl"
    path.write_text(json.dumps({"id": "p0", "prompt": "What is 1 divided by 2?", "answer": "0.5", "split": "test"}) + "\n")
    return f"jsonl:{path}" + (f"?compare={compare}" if compare else "")


def test_compare_option_selects_math_scoring(tmp_path: Path) -> None:
    math_task = load_task(_halves_task(tmp_path, "math"))
    plain_task = load_task(_halves_task(tmp_path, None))
    problem = math_task.problems("test")[0]
    assert math_task.answer_format.compare == "math" and plain_task.answer_format.compare == "normalized"
    assert [math_task.score(problem, "", a) for a in HALVES] == [1.0, 1.0, 1.0]
    assert [plain_task.score(problem, "", a) for a in HALVES] == [0.0, 1.0, 0.0]
    assert math_task.score(problem, "", "2") == 0.0 and math_task.score(problem, "", None) == 0.0


def test_compare_option_rejects_unknown_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compare"):
        load_task(_halves_task(tmp_path, "sympy"))


def test_math_scoring_of_a_reasoning_gym_task() -> None:
    task = load_task("reasoning_gym:basic_arithmetic?max_terms=2&compare=math")
    problem = task.problems("test", 1)[0]
    written = f"\\frac{{{2 * int(problem.answer)}}}{{2}}"  # the reference's value, written as a fraction
    assert task.score(problem, "", written) == 1.0
    assert load_task("reasoning_gym:basic_arithmetic?max_terms=2").score(problem, "", written) == 0.0
    assert task.score(problem, "", str(int(problem.answer) + 1)) == 0.0


def test_vote_keys_group_equal_values_under_the_first_answer(tmp_path: Path) -> None:
    task = load_task(_halves_task(tmp_path, "math"))
    keys = task.vote_keys(["3", *HALVES, None, "x=3", "2"])
    assert keys == ["3", "1/2", "1/2", "1/2", None, "3", "2"]
    plain = load_task(_halves_task(tmp_path, None)).vote_keys(list(HALVES))
    assert len(set(plain)) == 3


@pytest.mark.parametrize(("compare", "winner", "share"), [("math", "1/2", 3 / 6), (None, "3", 2 / 6)])
def test_majority_vote_counts_equal_values_as_one_answer(
    tmp_path: Path, fake_backend, compare: str | None, winner: str, share: float
) -> None:
    replies = [*HALVES, "3", "3", "7"]
    fake_backend.script = lambda request, prompt, index: f"Answer: {replies[index]}"
    recipe = Recipe.model_validate({
        "name": "vote", "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": len(replies)}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
        ],
        "output": "vote",
    })
    out = tmp_path / "run"
    orchestra.run(recipe, _halves_task(tmp_path, compare), out=out, cache=False)
    top = traces(out)[("p0", "vote")]["outputs"][0]
    assert top["answer"] == winner and top["scores"]["votes"] == pytest.approx(share)
    assert lines(out / "results.jsonl")[0]["score"] == (1.0 if compare else 0.0)


def test_math_equal_outside_the_main_thread() -> None:
    """A server's worker thread cannot set math-verify's alarm; the comparison still runs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(math_equal, "\\frac{3}{4}", "0.75").result()
        assert not pool.submit(math_equal, "\\frac{3}{4}", "0.7").result()


def test_problem_reference_may_be_latex(tmp_path: Path) -> None:
    task = load_task(_halves_task(tmp_path, "math"))
    problem = Problem.from_prompt("q", "?", answer="\\frac{1}{2}")
    assert task.score(problem, "", "0.5") == 1.0
