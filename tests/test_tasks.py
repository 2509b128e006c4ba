"""Tasks and answer extraction: spec parsing, fixed splits, scorers. Fast; no model needed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestra.answers import AnswerFormat, extract_answer, normalize_answer
from orchestra.tasks import SPLITS, HumanEvalTask, JsonlTask, ReasoningGymTask, known_task_kinds, load_task, parse_spec

# --- answers.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("so 2+2 is four.\nAnswer: 4", AnswerFormat(), "4"),
        ("Answer: 12.", AnswerFormat(), "12"),
        ("Answer: **12**", AnswerFormat(), "12"),
        ("Answer: 1,000", AnswerFormat(), "1000"),
        ("answer: Paris.", AnswerFormat(), "Paris"),
        ("Final: 7\n", AnswerFormat(strategy="marker", marker="Final:"), "7"),
        ("no marker here", AnswerFormat(strategy="marker"), None),
        ("we get \\boxed{\\frac{1}{2}} in the end", AnswerFormat(), "\\frac{1}{2}"),
        ("\\boxed{3} then \\boxed{5}", AnswerFormat(strategy="boxed"), "5"),
        ("first 3, then 1,000 and finally -2.5", AnswerFormat(strategy="last_number"), "-2.5"),
        ("first 3, then 1,000", AnswerFormat(), "1000"),
        ("nothing numeric", AnswerFormat(), None),
        ("result=41; result=42", AnswerFormat(strategy="regex", pattern=r"result=(\d+)"), "42"),
        ("x y z", AnswerFormat(strategy="regex", pattern=r"\d+"), None),
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone", AnswerFormat(strategy="code"), "def f():\n    return 1\n"),
        ("def f(): pass", AnswerFormat(strategy="code"), "def f(): pass"),
        ("  whole text \n", AnswerFormat(strategy="full"), "whole text"),
        # a marker only mentioned (an echo of the instructions) is not an answer
        ("3 + 4 = 7. I write 'Answer: ' followed by the final answer.", AnswerFormat(), "7"),
        ("Answer: 7\nThen write 'Answer: ' followed by the final answer.", AnswerFormat(), "7"),
        ('Write "Answer:" then the number.', AnswerFormat(strategy="marker"), None),
    ],
)
def test_extract_answer(text: str, fmt: AnswerFormat, expected: str | None) -> None:
    assert extract_answer(text, fmt) == expected


def test_marker_bold_then_period() -> None:
    assert extract_answer("Answer: **12**.") == "12"


def test_regex_strategy_needs_pattern() -> None:
    with pytest.raises(ValueError):
        extract_answer("42", AnswerFormat(strategy="regex"))


@pytest.mark.parametrize(
    ("a", "b"),
    [("1,000", "1000"), ("4.0", "4"), ("$5$", "5"), ("  Paris. ", "paris"), ("New   York", "new york"), ("0.50", ".5")],
)
def test_normalize_answer_equal(a: str, b: str) -> None:
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_answer_distinct_and_none() -> None:
    assert normalize_answer("4.5") != normalize_answer("4")
    assert normalize_answer("cat") != normalize_answer("dog")
    assert normalize_answer(None) is None


# --- spec parsing ---------------------------------------------------------------------------


def test_parse_spec_types_options() -> None:
    kind, name, options = parse_spec(
        "reasoning_gym:basic_arithmetic?max_terms=2&operators=[+,-]&allow_negation=false&answer=marker&marker=Final:"
    )
    assert (kind, name) == ("reasoning_gym", "basic_arithmetic")
    assert options == {
        "max_terms": 2,
        "operators": ["+", "-"],
        "allow_negation": False,
        "answer": "marker",
        "marker": "Final:",
    }
    assert parse_spec("humaneval") == ("humaneval", None, {})
    # format options are kept verbatim (a regex is not YAML); %-escapes allow '&' in values
    assert parse_spec(r"jsonl:x.jsonl?pattern=A:\s*(\d+)%26")[2] == {"pattern": r"A:\s*(\d+)&"}


def test_load_task_answer_format_options() -> None:
    task = load_task("reasoning_gym:basic_arithmetic?max_terms=2&answer=marker&marker=Final:")
    assert isinstance(task, ReasoningGymTask)
    assert task.answer_format == AnswerFormat(strategy="marker", marker="Final:")
    assert task.config == {"max_terms": 2}
    assert task.spec == "reasoning_gym:basic_arithmetic?max_terms=2&answer=marker&marker=Final:"
    assert task.extract_answer("blah\nFinal: 9") == "9"
    assert load_task("reasoning-gym:basic_arithmetic").answer_format == AnswerFormat()
    assert load_task("humaneval").answer_format.strategy == "code"
    regex = load_task(r"reasoning_gym:basic_arithmetic?answer=regex&pattern=is (-?\d+)")
    assert regex.extract_answer("it is 12, no, it is 13") == "13"


def test_known_kinds() -> None:
    assert {"reasoning_gym", "humaneval", "jsonl"} <= set(known_task_kinds())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchkind:foo", "unknown task kind .nosuchkind.*known: .*reasoning_gym"),
        ("reasoning_gym:basic_arithmetc", "basic_arithmetic"),
        ("reasoning_gym:basic_arithmetic?max_term=2", "'max_term'"),
        ("reasoning_gym:basic_arithmetic?min_terms=5&max_terms=2", "invalid config"),
        ("reasoning_gym:basic_arithmetic?answer=nope", "strategy"),
        ("reasoning_gym:basic_arithmetic?answer=regex", "pattern"),
        ("reasoning_gym", "needs a dataset name"),
        ("humaneval?tmeout=2", "'tmeout'"),
        ("humaneval:extra", "takes no name"),
        ("jsonl:/no/such/file.jsonl", "not found"),
    ],
)
def test_load_task_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_task(spec)


# --- reasoning gym ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arithmetic() -> ReasoningGymTask:
    task = load_task("reasoning_gym:basic_arithmetic?max_terms=3&max_digits=2")
    assert isinstance(task, ReasoningGymTask)
    return task


def test_reasoning_gym_splits_fixed(arithmetic: ReasoningGymTask) -> None:
    test = arithmetic.problems("test", 5)
    assert [p.id for p in test] == [f"basic_arithmetic/test/{i}" for i in range(5)]
    assert test == arithmetic.problems("test", 5)
    fresh = load_task(arithmetic.spec).problems("test", 5)
    assert [(p.prompt, p.answer) for p in fresh] == [(p.prompt, p.answer) for p in test]
    train = arithmetic.problems("train", 5)
    assert [p.prompt for p in train] != [p.prompt for p in test]
    assert "Answer:" in test[0].prompt and test[0].answer
    json.dumps([p.metadata for p in test])


def test_reasoning_gym_prefix_stable_under_limit(arithmetic: ReasoningGymTask) -> None:
    assert arithmetic.problems("dev", 3) == arithmetic.problems("dev", 20)[:3]
    assert len(arithmetic.problems("dev")) == 200
    # acre pre-generates a size-dependent pool: slicing a fixed-size split keeps prefixes stable
    acre = load_task("reasoning_gym:acre?size=30")
    assert acre.problems("test", 2) == acre.problems("test", 10)[:2]


def test_reasoning_gym_score(arithmetic: ReasoningGymTask) -> None:
    problem = arithmetic.problems("test", 1)[0]
    assert problem.answer is not None
    text = f"Let me compute.\nAnswer: {problem.answer}"
    assert arithmetic.score(problem, text, arithmetic.extract_answer(text)) == 1.0
    wrong = str(int(problem.answer) + 1)
    assert arithmetic.score(problem, f"Answer: {wrong}", wrong) == 0.0
    assert arithmetic.score(problem, "no idea", None) == 0.0
    # a problem that went through JSON (e.g. a saved run) still scores
    restored = type(problem).model_validate_json(problem.model_dump_json())
    assert arithmetic.score(restored, "", problem.answer) == 1.0


# --- humaneval ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval() -> HumanEvalTask:
    task = load_task("humaneval?timeout=2")
    assert isinstance(task, HumanEvalTask)
    return task


def test_humaneval_splits(humaneval: HumanEvalTask) -> None:
    ids = {split: [p.id for p in humaneval.problems(split)] for split in SPLITS}
    assert sum(map(len, ids.values())) == 164
    assert len(set().union(*ids.values())) == 164
    assert all(len(v) > 20 for v in ids.values())
    assert ids["test"][:3] == [p.id for p in humaneval.problems("test", 3)]
    problem = humaneval.problems("test", 1)[0]
    assert problem.tests and problem.metadata["entry_point"] in problem.prompt
    assert "```python" in problem.prompt


def test_humaneval_canonical_solutions_pass(humaneval: HumanEvalTask) -> None:
    for problem in humaneval.problems("test", 2):
        body = problem.metadata["canonical_solution"]
        assert humaneval.score(problem, body, humaneval.extract_answer(body)) == 1.0
        full = f"Here you go:\n```python\n{problem.metadata['prompt']}{body}```\n"
        assert humaneval.score(problem, full, humaneval.extract_answer(full)) == 1.0


def test_humaneval_wrong_and_timeout(humaneval: HumanEvalTask) -> None:
    problem = humaneval.problems("test", 1)[0]
    assert humaneval.score(problem, "", "    return None\n") == 0.0
    assert humaneval.score(problem, "", "    this is not python\n") == 0.0
    start = time.monotonic()
    assert humaneval.score(problem, "", "    while True:\n        pass\n") == 0.0
    assert time.monotonic() - start < 40  # the loop never ends by itself: the 2 s limit stopped it


def test_humaneval_runs_code_in_the_sandbox(humaneval: HumanEvalTask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model code runs with no inherited environment, in its own empty directory: a correct
    solution that also checks both passes, so a leak would turn the score to 0."""
    monkeypatch.setenv("ORCHESTRA_FAKE_SECRET", "x")
    problem = humaneval.problems("test", 1)[0]
    probe = "import os\nassert 'ORCHESTRA_FAKE_SECRET' not in os.environ\nassert os.listdir('.') == ['program.py']\n"
    full = f"{probe}{problem.metadata['prompt']}{problem.metadata['canonical_solution']}"
    assert humaneval.score(problem, "", full) == 1.0
    leaky = full.replace("not in os.environ", "in os.environ")
    assert humaneval.score(problem, "", leaky) == 0.0
    assert humaneval.sandbox_limits.wall_seconds == 2 and humaneval.sandbox_limits.memory_mb == 2048


# --- jsonl --------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_task(tmp_path: Path) -> None:
    rows = [
        {"q": "What is 2+2?", "a": 4, "id": "a", "split": "test"},
        {"q": "Capital of France?", "a": "Paris", "id": "b", "split": "test"},
        {"q": "1000 in digits?", "a": "1,000", "split": "train"},
    ]
    path = _write(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
    task = load_task(f"jsonl:{path}?prompt=q&answer_field=a")
    assert isinstance(task, JsonlTask)
    test = task.problems("test")
    assert [p.id for p in test] == ["a", "b"]
    assert test[0].prompt.startswith("What is 2+2?") and test[0].answer == "4"
    assert [p.id for p in task.problems("train")] == ["3"]  # no id field: the line number
    assert task.problems("dev") == []
    assert task.problems("test", 1) == test[:1]
    assert task.score(test[0], "Answer: 4.0", task.extract_answer("Answer: 4.0")) == 1.0
    assert task.score(test[0], "Answer: 5", "5") == 0.0
    assert task.score(test[1], "Answer: paris.", task.extract_answer("Answer: paris.")) == 1.0
    assert task.score(task.problems("train")[0], "", "1000") == 1.0
    assert task.score(test[0], "", None) == 0.0


def test_jsonl_stable_split_without_split_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "many.jsonl", [json.dumps({"prompt": f"q{i}", "answer": i}) for i in range(50)])
    task = load_task(f"jsonl:{path}")
    sizes = [len(task.problems(s)) for s in SPLITS]
    assert sum(sizes) == 50 and all(sizes)
    assert [p.id for p in load_task(f"jsonl:{path}").problems("test")] == [p.id for p in task.problems("test")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "x", "answer": 1}', "{not json"], "line 2 is not valid JSON"),
        (['{"prompt": "x"}'], "line 1 has no answer field 'answer'"),
        (['{"answer": 1}'], "line 1 has no prompt field 'prompt'"),
        (['{"prompt": "x", "answer": 1, "split": "val"}'], "line 1 has split 'val'"),
        (['{"prompt": "x", "answer": 1, "id": 7}', '{"prompt": "y", "answer": 2, "id": 7}'], "line 2 repeats id"),
        (["[1, 2]"], "line 1 is not a JSON object"),
    ],
)
def test_jsonl_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        load_task(f"jsonl:{path}")


def test_jsonl_unknown_option(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.jsonl", ['{"prompt": "x", "answer": 1}'])
    with pytest.raises(ValueError, match="'question'"):
        load_task(f"jsonl:{path}?question=q")
