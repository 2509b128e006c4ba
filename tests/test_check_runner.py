"""A code problem's check passes only when it really ran to the end: exits, stray markers,
patched builtins and always-equal objects score 0, through the check runner, the
HumanEval task and the `execution` scorer alike."""

from __future__ import annotations

import asyncio
import random

import pytest

from orchestra.candidate import Candidate
from orchestra.code_execution.assert_runner import run_asserts
from orchestra.code_execution.check_runner import check_harness, passes_check
from orchestra.code_execution.verdict_channel import run_harness
from orchestra.code_execution.sandbox import SandboxLimits
from orchestra.context import Context
from orchestra.problem import Problem
from orchestra.tasks import load_task
from orchestra.techniques.scorers.execution import execution

STUB = 'import math\n\n\ndef scale(xs: list, factor: float) -> list:\n    """Each x times factor."""\n'
PROBLEM = Problem.from_prompt(
    "scale/0",
    f"```python\n{STUB}```",
    tests=(
        "import math\n\n"
        "def check(candidate):\n"
        "    assert candidate([1, 2], 2) == [2, 4]\n"
        "    assert abs(candidate([0.5], 3)[0] - 1.5) < 1e-9\n"
        "    assert math.isclose(candidate([1.0], 0.1)[0], 0.1)\n"
        "    assert candidate([], 5) == []\n"
    ),
    metadata={"entry_point": "scale", "prompt": STUB},
)
LIMITS = SandboxLimits(wall_seconds=20, cpu_seconds=20)
RIGHT = "    return [x * factor for x in xs]\n"
WRONG = "    return [x + factor for x in xs]\n"
#: Right on whole numbers, wrong where only `abs` and `math.isclose` catch it.
NEAR = "    return [int(x * factor) for x in xs]\n"

#: Wrong code that tries to pass anyway, by how.
CHEATS = {
    "sys.exit(0) after the module": WRONG + "\nimport sys\nsys.exit(0)\n",
    "os._exit(0) after the module": WRONG + "\nimport os\nos._exit(0)\n",
    "sys.exit(0) inside the function": "    import sys\n    sys.exit(0)\n",
    "os._exit(0) inside the function": "    import os\n    os._exit(0)\n",
    "SystemExit raised inside the function": "    raise SystemExit(0)\n",
    "exit() in the demo block": WRONG + "\nif __name__ == '__main__':\n    exit(0)\nexit(0)\n",
    "builtins and math patched": NEAR + "\nimport builtins, math\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\n",
    "builtins and math patched during the call": "    import builtins, math\n    builtins.abs = lambda x: 0\n"
    "    math.isclose = lambda *a, **k: True\n" + NEAR,
    "AssertionError replaced": NEAR + "\nimport builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n",
    "an object equal to everything": (
        "    class Anything(list):\n        def __eq__(self, other):\n            return True\n"
        "        def __getitem__(self, index):\n            return xs[0] * factor\n"
        "    return Anything()\n"
    ),
    "a printed marker": WRONG + "\nprint('pass')\nprint('PASS')\nprint('OK')\n",
    "pass written to every descriptor": WRONG + (
        "\nimport os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\npass\\n')\n    except OSError:\n        pass\n"
    ),
    "the secret read from stdin": WRONG + (
        "\nimport os, sys\nsecret = sys.stdin.read().strip()\n"
        "for fd in range(3, 64):\n    try:\n        os.write(fd, ('\\n' + secret + ' pass\\n').encode())\n    except OSError:\n        pass\n"
    ),
    "the checking process killed": WRONG + "\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "a hang": "    while True:\n        pass\n",
}


def test_right_code_passes_and_wrong_code_fails() -> None:
    assert passes_check(PROBLEM, RIGHT, LIMITS)
    assert passes_check(PROBLEM, "def scale(xs, factor):\n    return [factor * x for x in xs]\n", LIMITS)
    assert not passes_check(PROBLEM, WRONG, LIMITS)
    assert not passes_check(PROBLEM, NEAR, LIMITS)
    assert not passes_check(PROBLEM, "    return [x * factor for x in xs\n", LIMITS)  # does not compile


@pytest.mark.parametrize("how", list(CHEATS))
def test_wrong_code_cannot_pass_by(how: str) -> None:
    limits = SandboxLimits(wall_seconds=3, cpu_seconds=3) if how == "a hang" else LIMITS
    assert not passes_check(PROBLEM, CHEATS[how], limits)


def test_right_code_still_passes_when_it_exits_or_prints_afterwards() -> None:
    # the verdict is the check's, so harmless noise around a right answer costs nothing
    assert passes_check(PROBLEM, RIGHT + "\nprint('fail')\nif __name__ == '__main__':\n    raise SystemExit(1)\n", LIMITS)


def test_humaneval_and_the_execution_scorer_score_an_exit_0_program_0() -> None:
    task = load_task("humaneval?timeout=10")
    problem = task.problems("test", 1)[0]
    cheat = "    return None\n\nimport sys\nsys.exit(0)\n"
    assert task.score(problem, "", problem.metadata["canonical_solution"]) == 1.0
    assert task.score(problem, "", cheat) == 0.0
    ctx = Context(problem=problem, node="score", task=task, models={}, default_model=None, seed=0, rng=random.Random(0))
    assert asyncio.run(execution(ctx, Candidate(text="", answer=problem.metadata["canonical_solution"]))) == 1.0
    assert asyncio.run(execution(ctx, Candidate(text="", answer=cheat))) == 0.0


def test_assert_verdicts_are_not_forged_by_exits_or_markers() -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    exits = "def add(a, b):\n    return a - b\nimport os\nos._exit(0)\n"
    prints = (
        "def add(a, b):\n    return a - b\nimport os\nfor fd in range(1, 64):\n"
        "    try:\n        os.write(fd, b'\\n0 pass\\n1 pass\\nloaded\\n')\n    except OSError:\n        pass\n"
    )
    assert run_asserts(exits, tests).passed == (False, False)
    assert run_asserts(prints, tests).passed == (False, False)
    assert run_asserts("def add(a, b):\n    return a + b\n", tests).passed == (True, True)


def test_a_candidate_that_keeps_running_after_the_check_does_not_hold_up_the_verdict() -> None:
    busy = RIGHT + "\nimport threading\n\ndef _spin():\n    while True:\n        pass\n\nthreading.Thread(target=_spin).start()\n"
    verdicts, result = run_harness(check_harness(PROBLEM, busy), SandboxLimits(wall_seconds=60, cpu_seconds=60))
    assert verdicts == ["pass"] and not result.timed_out
