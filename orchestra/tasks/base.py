"""What every task provides: problems in fixed splits, answer extraction, and a scorer;
and the registry of task kinds (`reasoning_gym`, `humaneval`, `jsonl`, plugins')."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

from orchestra.answers import AnswerFormat, extract_answer, normalize_answer
from orchestra.math_equivalence import math_equal
from orchestra.problem import Problem
from orchestra.registry import Registry

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")


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
        return f"Solve it step by step, then write '{fmt.marker} ' followed by the final answer."
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


class Task(ABC):
    """A source of problems plus the ground truth to score answers against.

    Splits are fixed: the same task spec and split always give the same
    problems, in the same order, so runs, comparisons and searches line up.
    """

    #: What the NAME of a `KIND:NAME` spec is for this kind ("a dataset name"); None: it takes none.
    name_is: ClassVar[str | None] = None
    #: The answer format of a spec that sets none (`answer=`, `marker=`, `pattern=` override it).
    default_answer_format: ClassVar[AnswerFormat] = AnswerFormat()

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

    def same_answer(self, reference: str, answer: str) -> bool:
        """Whether `answer` agrees with `reference`: equal canonical forms, or under the answer
        format's `compare: math` the same mathematical value (math-verify)."""
        if self.answer_format.compare == "math":
            return math_equal(reference, answer)
        return self.normalize(reference) == self.normalize(answer)

    def vote_keys(self, answers: Sequence[str | None]) -> list[str | None]:
        """Each answer's vote: its canonical form, so that answers that agree share one key.

        Under `compare: math` agreement is not a canonical form but a comparison,
        so an answer takes the key of the first earlier answer it agrees with.
        None (no answer) stays None.
        """
        keys = [None if answer is None else self.normalize(answer) for answer in answers]
        if self.answer_format.compare != "math":
            return keys
        firsts: dict[str, str] = {}  # each vote's key -> its first answer
        votes: list[str | None] = []
        for answer, key in zip(answers, keys):
            if answer is None or key is None:
                votes.append(None)
                continue
            if key not in firsts:
                key = next((k for k, first in firsts.items() if self.same_answer(first, answer)), key)
                firsts.setdefault(key, answer)
            votes.append(key)
        return votes

    @abstractmethod
    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """1.0 for a correct answer, 0.0 for a wrong one (partial credit in between)."""


#: Task classes by kind, the first part of a task spec. A class is built as
#: `cls(name, spec=..., answer_format=..., **options)` (no `name` when `name_is` is None);
#: plugins register through the `orchestra.tasks` entry-point group.
TASK_KINDS: Registry[type[Task]] = Registry(
    "task kind",
    "orchestra.tasks",
    ["orchestra.tasks.reasoning_gym_task", "orchestra.tasks.humaneval_task", "orchestra.tasks.jsonl_task"],
)


def task_kind(name: str):
    """Class decorator: register a `Task` subclass as the task kind `name`."""
    return TASK_KINDS.decorator(name)
