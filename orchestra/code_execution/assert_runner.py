"""Running one program against many assert statements, with a verdict per assert.

One sandboxed process per program, not per test: starting an interpreter costs
more than most tests. Inside it, the program is loaded once (as a module named
`__solution__`, so its `if __name__ == "__main__":` demo code does not run),
then each test runs in its own copy of the program's namespace under its own
timer, and a verdict line is written the moment it is known. A test that
hangs, crashes the interpreter or exhausts a limit fails alone; tests after it
that never report are counted as failed too. The program's own output is sent
to /dev/null.

Verdicts go through the verdict channel (file descriptor 3, each line under a
secret read from stdin before the program loads), so nothing the program
prints, and no early `sys.exit(0)`, counts as a pass. The program runs in the
harness's own process, though: code written to dig the secret out of the
harness's memory could forge verdicts (HumanEval's `check_runner` closes that
by running the candidate in a process of its own).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from orchestra.code_execution.sandbox import SandboxLimits
from orchestra.code_execution.verdict_channel import HARNESS_PRELUDE, run_harness

_HARNESS = HARNESS_PRELUDE + """\
import json, signal, sys
_SOURCE, _TESTS, _SECONDS = json.loads({payload!r})
_SECRET = _read_secret()
sys.stdout = sys.stderr = open(_os.devnull, "w")

class _OutOfTime(BaseException):
    pass

def _ring(signum, frame):
    raise _OutOfTime()

def _run(source, name, namespace):
    signal.signal(signal.SIGALRM, _ring)
    signal.setitimer(signal.ITIMER_REAL, _SECONDS)
    try:
        exec(compile(source, name, "exec"), namespace)
        return True
    except BaseException:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

_namespace = {{"__name__": "__solution__", "__builtins__": __builtins__}}
try:
    _loaded = _run(_SOURCE, "solution.py", _namespace)
except BaseException:
    _loaded = False
_say(_SECRET, "loaded" if _loaded else "load-failed")
if _loaded:
    for _index, _test in enumerate(_TESTS):
        try:
            _verdict = "pass" if _run(_test, "test_%d" % _index, dict(_namespace)) else "fail"
        except BaseException:
            _verdict = "fail"
        _say(_SECRET, "%d %s" % (_index, _verdict))
"""


class AssertResults(BaseModel):
    """Per-test verdicts for one program; `loaded` is False when the program itself failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loaded: bool
    passed: tuple[bool, ...]
    timed_out: bool = False

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_asserts(
    source: str, tests: list[str], *, test_seconds: float = 1.0, memory_mb: int | None = 1024
) -> AssertResults:
    """Run each assert in `tests` against the module `source`, in one sandboxed process.

    `test_seconds` bounds loading the program and each test; the whole run gets
    all of those together plus a few seconds, as both its deadline and its CPU time.
    """
    if not tests:
        return AssertResults(loaded=True, passed=())
    program = _HARNESS.format(payload=json.dumps([source, tests, test_seconds]))
    budget = test_seconds * (len(tests) + 1) + 5.0
    limits = SandboxLimits(wall_seconds=budget, cpu_seconds=budget, memory_mb=memory_mb)
    lines, result = run_harness(program, limits)
    verdicts: dict[int, bool] = {}
    loaded = False
    for rest in lines:
        if rest == "loaded":
            loaded = True
        elif rest != "load-failed":
            index, _, verdict = rest.partition(" ")
            if index.isdigit():
                verdicts[int(index)] = verdict == "pass"
    return AssertResults(
        loaded=loaded,
        passed=tuple(verdicts.get(i, False) for i in range(len(tests))),
        timed_out=result.timed_out,
    )
