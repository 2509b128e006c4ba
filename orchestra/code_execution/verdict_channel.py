"""The verdict channel: how a harness reports results apart from what the code under test can say.

A harness that runs model-written code must not take "the process exited 0" or
"a line saying PASS was printed" as a verdict: `sys.exit(0)` after a wrong
function, or a printed marker, would pass. Instead the harness writes verdict
lines to the sandbox's report channel (file descriptor 3, not stdout), each
prefixed by a secret. The secret reaches the harness on stdin, never in the
program's text, arguments or environment; the harness reads it only after the
untrusted code can no longer see it (`check_runner` forks the code away first).
Lines without the secret are ignored, so nothing the code prints, and nothing it
writes blindly to stray descriptors, counts.
"""

from __future__ import annotations

import secrets

from orchestra.code_execution.sandbox import SandboxLimits, SandboxResult, run_python

#: Harness source: `_read_secret()` returns the secret and leaves stdin at /dev/null;
#: `_say(secret, line)` writes one verdict line to the report channel.
HARNESS_PRELUDE = """\
import os as _os

def _read_secret():
    data = b""
    while True:
        chunk = _os.read(0, 4096)
        if not chunk:
            break
        data += chunk
    null = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(null, 0)
    _os.close(null)
    return data.decode("ascii")

def _say(secret, line):
    _os.write(3, ("\\n" + secret + " " + line + "\\n").encode())
"""


def run_harness(program: str, limits: SandboxLimits) -> tuple[list[str], SandboxResult]:
    """Run a harness (`HARNESS_PRELUDE` first) in the sandbox; the verdict lines it said,
    in order and without their secret, and the run itself."""
    secret = secrets.token_hex(16)
    result = run_python(program, limits, stdin=secret.encode("ascii"))
    verdicts = []
    for line in result.report.splitlines():
        head, _, rest = line.partition(" ")
        if head == secret:
            verdicts.append(rest)
    return verdicts, result
