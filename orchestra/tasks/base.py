"""What every task provides: problems in fixed splits, answer extraction, and a scorer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from orchestra.answers import AnswerFormat, extract_answer, normalize_answer
from orchestra.problem import Problem

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")


class Task(ABC):
    """A source of problems plus the ground truth to score answers against.

    Splits are fixed: the same task spec and split always give the same
    problems, in the same order, so runs, comparisons and searches line up.
    """

    #: The spec this task was loaded from, e.g. "reasoning_gym:chain_sum?max_terms=2".
    spec: str
    #: How a final answer is pulled out of a completion (overridable per task spec).
    answer_format: AnswerFormat

    @abstractmethod
    def problems(self, split: Split = "test", limit: int | None = None) -> list[Problem]:
        """The first `limit` problems of a split (all of them when limit is None)."""

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text, self.answer_format)

    def normalize(self, answer: str | None) -> str | None:
        """Canonical form used to decide that two answers are the same (for voting)."""
        return normalize_answer(answer)

    @abstractmethod
    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """1.0 for a correct answer, 0.0 for a wrong one (partial credit in between)."""
