"""Problems from a local JSON-lines file: bring your own questions and reference answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestra.answers import AnswerFormat
from orchestra.problem import Problem
from orchestra.tasks.base import (
    SPLITS,
    Split,
    Task,
    answer_instruction,
    check_limit,
    check_split,
    stable_split,
    task_kind,
)


@task_kind("jsonl")
class JsonlTask(Task):
    """One problem per line of a JSONL file; scored by matching the reference answer.

    Each line is a JSON object with a prompt field, an answer field, and
    optionally an id field (default: the line number) and a split field
    (default: a stable hash of the id) that pins the row to train/dev/test.
    """

    name_is = "a file path"
    default_answer_format = AnswerFormat()

    def __init__(
        self,
        path: str,
        *,
        spec: str | None = None,
        answer_format: AnswerFormat | None = None,
        prompt: str = "prompt",
        answer_field: str = "answer",
        id: str = "id",
        split_field: str = "split",
        instruct: bool = True,
    ) -> None:
        self.path = Path(path)
        self.spec = spec or f"jsonl:{path}"
        self.answer_format = answer_format or self.default_answer_format
        self.fields = {"prompt": str(prompt), "answer": str(answer_field), "id": str(id), "split": str(split_field)}
        self.instruct = bool(instruct)
        self._by_split: dict[Split, list[Problem]] = {split: [] for split in SPLITS}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            raise ValueError(f"jsonl task: file not found: {self.path}")
        seen: set[str] = set()
        f = self.fields
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"jsonl task: line {number} is not valid JSON ({where}): {error.msg}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"jsonl task: line {number} is not a JSON object ({where})")
                for role in ("prompt", "answer"):
                    if f[role] not in row:
                        raise ValueError(f"jsonl task: line {number} has no {role} field {f[role]!r} ({where})")
                problem_id = str(row.get(f["id"], number))
                if problem_id in seen:
                    raise ValueError(f"jsonl task: line {number} repeats id {problem_id!r} ({where})")
                seen.add(problem_id)
                split = row.get(f["split"], None)
                if split is None:
                    split = stable_split(problem_id)
                elif split not in SPLITS:
                    raise ValueError(f"jsonl task: line {number} has split {split!r}, expected one of {SPLITS} ({where})")
                self._by_split[split].append(self._problem(problem_id, row, number))

    def _problem(self, problem_id: str, row: dict[str, Any], number: int) -> Problem:
        f = self.fields
        prompt = str(row[f["prompt"]])
        instruction = answer_instruction(self.answer_format) if self.instruct else ""
        if instruction:
            prompt = f"{prompt}\n{instruction}"
        answer = row[f["answer"]]
        extra = {k: v for k, v in row.items() if k not in f.values()}
        return Problem.from_prompt(
            problem_id,
            prompt,
            answer=None if answer is None else str(answer),
            metadata={"line": number, **extra},
        )

    def problems(self, split: Split = "test", limit: int | None = None) -> list[Problem]:
        check_limit(limit)
        rows = self._by_split[check_split(split)]
        return list(rows if limit is None else rows[:limit])

    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """Match of answers: normalised (numbers by value, text case- and space-folded) or,
        with `compare=math`, by mathematical value."""
        if answer is None or problem.answer is None:
            return 0.0
        return 1.0 if self.same_answer(problem.answer, answer) else 0.0
