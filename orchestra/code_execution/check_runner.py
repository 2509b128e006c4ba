"""Running a code problem's own check against a candidate, with a verdict the candidate cannot fake.

HumanEval's tests are a `check(candidate)` function full of asserts. Running the
candidate's module and the check in one process and taking "exit code 0" as a
pass lets a wrong function followed by `sys.exit(0)` score 1.0; and anything in
that process -- patched builtins or modules, an object whose `==` is always
true -- can bend the check itself. So the harness splits the work in two
processes inside the sandbox:

- the candidate's process (forked first, before anything secret exists): loads
  the candidate's module (as `__solution__`, so demo code under
  `if __name__ == "__main__":` does not run) and answers calls of the function
  under test, sending back each result pickled;
- the checking process: reads the verdict channel's secret only after the fork,
  runs the problem's stub (its helpers, e.g. `poly`) and tests in a namespace
  the candidate never touches, and calls `check` with a stand-in that forwards
  each call. Results are unpickled as plain data only (numbers, strings, bytes,
  lists, tuples, dicts, sets, None): an object of any class of the candidate's
  is refused, so it cannot compare equal to everything.

Only the checking process, after `check` returns, says "pass". Exiting,
raising SystemExit, crashing or hanging, in the module or in a call, yields no
pass. The candidate could still kill the checking process (they share a uid);
that, too, yields no pass. Where /proc is mounted (runs without namespaces) the
harness makes itself non-dumpable before the fork, so the candidate cannot open
the checking process's descriptors or memory.
"""

from __future__ import annotations

import json

from orchestra.code_execution.program import solution_module
from orchestra.code_execution.sandbox import SandboxLimits
from orchestra.code_execution.verdict_channel import HARNESS_PRELUDE, run_harness
from orchestra.problem import Problem

_HARNESS = HARNESS_PRELUDE + """\
import builtins, io, pickle, json
_STUB, _SOLUTION, _TESTS, _ENTRY = json.loads({payload!r})

def _send(stream, message):
    data = pickle.dumps(message, protocol=5)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()

def _receive(stream, unpickler):
    size = stream.read(8)
    if len(size) < 8:
        raise EOFError("the candidate's process ended")
    return unpickler(io.BytesIO(stream.read(int.from_bytes(size, "little")))).load()

def _serve_candidate(requests, replies):
    # the candidate's process: from here on nothing is trusted, and nothing secret is here
    _os.close(3)
    null = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(null, 0)  # the secret is still unread in stdin: the checking process reads it
    _os.close(null)
    namespace = {{"__name__": "__solution__", "__builtins__": builtins}}
    try:
        exec(compile(_SOLUTION, "solution.py", "exec"), namespace)
        function = namespace[_ENTRY]
    except BaseException as error:
        _send(replies, ("failed", type(error).__name__))
        _os._exit(1)
    _send(replies, ("loaded", None))
    while True:
        try:
            args, kwargs = _receive(requests, pickle.Unpickler)
        except EOFError:  # the check is over
            _os._exit(0)
        try:
            value = function(*args, **kwargs)
            data = pickle.dumps(("value", value), protocol=5)
        except BaseException as error:
            name = type(error).__name__
            data = pickle.dumps(("raised", name if isinstance(error, Exception) else "BaseException"), protocol=5)
        replies.write(len(data).to_bytes(8, "little") + data)
        replies.flush()

class _PlainData(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("builtins", "complex"):
            return complex
        raise pickle.UnpicklingError("%s.%s is not plain data" % (module, name))

class _CandidateFailed(Exception):
    pass

def _check():
    requests_read, requests_write = _os.pipe()
    replies_read, replies_write = _os.pipe()
    if _os.path.isdir("/proc/self"):  # before the fork, so there is no moment to open our descriptors
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/<pid>/fd or mem for the candidate
    child = _os.fork()
    if child == 0:
        _os.close(requests_write)
        _os.close(replies_read)
        _serve_candidate(_os.fdopen(requests_read, "rb"), _os.fdopen(replies_write, "wb"))
        _os._exit(0)
    _os.close(requests_read)
    _os.close(replies_write)
    secret = _read_secret()
    requests, replies = _os.fdopen(requests_write, "wb"), _os.fdopen(replies_read, "rb")
    try:
        kind, detail = _receive(replies, _PlainData)
        if kind != "loaded":
            raise _CandidateFailed("the candidate's module failed: %s" % detail)

        def candidate(*args, **kwargs):
            _send(requests, (args, kwargs))
            kind, value = _receive(replies, _PlainData)
            if kind == "value":
                return value
            error = getattr(builtins, value, None)
            if isinstance(error, type) and issubclass(error, Exception):
                raise error("raised by the candidate")
            raise _CandidateFailed(value)

        namespace = {{"__name__": "__check__", "__builtins__": builtins}}
        exec(compile(_STUB, "stub.py", "exec"), namespace)
        namespace[_ENTRY] = candidate  # tests that name the function (HumanEval/33) mean the candidate's
        exec(compile(_TESTS, "tests.py", "exec"), namespace)
        namespace["check"](candidate)
    except BaseException:
        _say(secret, "fail")
    else:
        _say(secret, "pass")
    finally:
        _os.kill(child, 9)  # whatever it left running (a thread, a loop) ends with the check

_check()
"""


def check_harness(problem: Problem, code: str) -> str:
    """The harness program that runs the problem's `check(candidate)` tests (HumanEval's shape)
    against `code`; run it with `verdict_channel.run_harness`."""
    payload = json.dumps([
        problem.metadata.get("prompt") or "",
        solution_module(problem, code),
        problem.tests or "",
        problem.metadata["entry_point"],
    ])
    return _HARNESS.format(payload=payload)


def passes_check(problem: Problem, code: str, limits: SandboxLimits) -> bool:
    """Whether `code` passes the problem's `check(candidate)` tests, in the sandbox under `limits`."""
    verdicts, _ = run_harness(check_harness(problem, code), limits)
    return verdicts == ["pass"]
