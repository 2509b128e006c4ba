"""Problems from a local JSON-lines file: bring your own questions and reference answers.

Also home of two helpers the other tasks share: the stable hash split and the
one-line answer instruction appended to prompts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from orchestra.answers import AnswerFormat, normalize_answer
from orchestra.problem import Problem
from orchestra.tasks.base import SPLITS, Split, Task


def stable_split(key: str, train: float = 0.6, dev: float = 0.2) -> Split:
    """The split of an item, from a hash of its key.

    hashlib rather than hash(): Python randomises str hashes per process, and a
    split must not move between runs or machines.
    """
    bucket = int(hashlib.sha256(f"orchestra-split/{key}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    if bucket < train:
        return "train"
    return "dev" if bucket < train + dev else "test"


def answer_instruction(fmt: AnswerFormat) -> str:
    """A short line telling the model how to end its reply, matching what `fmt` extracts.

    Kept to one sentence: the default model is small and long instructions drown the question.
    """
    if fmt.strategy in ("auto", "marker"):
        return f"Think briefly, then end with a final line of the form '{fmt.marker} <answer>'."
    if fmt.strategy == "boxed":
        return "Think briefly, then put the final answer in \\boxed{}."
    if fmt.strategy == "last_number":
        return "Think briefly, then end with the final number."
    if fmt.strategy == "code":
        return "Reply with the code in a ```python code block."
    return ""  # regex / full: the prompt itself must say what to write


def check_split(split: str) -> Split:
    """Fail early and clearly on a misspelt split instead of returning no problems."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


class JsonlTask(Task):
    """One problem per line of a JSONL file; scored by exact match after normalisation.

    Each line is a JSON object with a prompt field, an answer field, and
    optionally an id field (default: the line number) and a split field
    (default: a stable hash of the id) that pins the row to train/dev/test.
    """

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
            prompt = f"{prompt}\n\n{instruction}"
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
        """Exact match of normalised answers: numbers by value, text case- and space-folded."""
        if answer is None or problem.answer is None:
            return 0.0
        return 1.0 if normalize_answer(answer) == normalize_answer(problem.answer) else 0.0
