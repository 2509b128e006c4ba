"""The sandbox for model-written code: each limit, proved by a program that hits it."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestra.code_execution.sandbox import SandboxLimits, drops_privileges, run_python

needs_root = pytest.mark.skipif(
    not drops_privileges(), reason="file permissions and uid-wide cleanup apply when orchestra runs as root"
)
# RLIMIT_NPROC binds any user but root: it holds when not root, or when the sandbox drops to a throwaway uid.
processes_capped = pytest.mark.skipif(
    os.getuid() == 0 and not drops_privileges(), reason="root without a privilege drop: RLIMIT_NPROC does not bind"
)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:")).split()[1]
    return state not in ("Z", "X")


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (a sandbox's own directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and _alive(int(entry)):
                found.append(int(entry))
    return found


def test_runs_a_program_and_captures_its_output() -> None:
    result = run_python("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nraise SystemExit(3)")
    assert result.exit_code == 3 and not result.timed_out and not result.ok
    assert result.stdout == "hello\n" and result.stderr == "oops\n"
    assert not result.truncated and result.seconds > 0
    assert run_python("x = 1").ok
    crashed = run_python("def f(:\n  pass")
    assert crashed.exit_code == 1 and "SyntaxError" in crashed.stderr


def test_runs_in_a_fresh_empty_directory_that_is_removed_afterwards() -> None:
    result = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nopen('scratch.txt', 'w').write('ok')")
    assert result.ok, result.stderr
    cwd, listing = result.stdout.splitlines()
    assert listing == "['program.py']"
    assert not Path(cwd).exists()


def test_the_parent_environment_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_TEST_SECRET", "hunter2-token")
    program = "import os\nprint(sorted(os.environ))\nprint(os.environ.get('ORCHESTRA_TEST_SECRET'))"
    result = run_python(program)
    assert result.ok, result.stderr
    names, secret = result.stdout.splitlines()
    assert secret == "None"
    assert "hunter2-token" not in result.stdout
    assert names == "['HOME', 'LANG', 'PATH', 'TMPDIR']"


def test_an_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    result = run_python("while True:\n    pass", SandboxLimits(cpu_seconds=1, wall_seconds=30))
    assert result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert not result.timed_out  # the 1 s CPU limit ended it, long before the 30 s wall deadline


def test_a_sleeping_program_is_stopped_by_the_wall_deadline() -> None:
    started = time.monotonic()
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)", SandboxLimits(wall_seconds=1))
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.stdout == "started\n"  # what it printed before the deadline is kept
    # stopped at the deadline, not after the program's 60 s (40 s leaves room for a loaded machine)
    assert 0.9 < result.seconds < 40 and time.monotonic() - started < 40


def test_a_memory_bomb_fails_inside_the_child() -> None:
    for bomb in ("x = bytearray(4 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))"):
        result = run_python(bomb, SandboxLimits(memory_mb=256, wall_seconds=30))
        assert result.exit_code not in (0, None), bomb
        assert "MemoryError" in result.stderr, result.stderr
    # the same allocation under the limit is fine: the limit, not the program, was the cause
    assert run_python("x = bytearray(64 * 1024 ** 2)", SandboxLimits(memory_mb=512)).ok


@processes_capped
def test_forking_is_capped_by_the_process_limit() -> None:
    program = """\
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            os.close(1); os.close(2)
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as error:
    print(children, error.errno)
"""
    result = run_python(program, SandboxLimits(processes=6, wall_seconds=20))
    assert result.ok, result.stderr
    children, code = map(int, result.stdout.split())
    assert 1 <= children <= 6 and code == errno.EAGAIN


@processes_capped
def test_a_fork_bomb_is_contained_and_cleaned_up() -> None:
    bomb = """\
import os
print(os.getcwd(), flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    started = time.monotonic()
    result = run_python(bomb, SandboxLimits(processes=8, wall_seconds=2, cpu_seconds=5))
    assert result.timed_out or result.exit_code not in (0, None)
    assert time.monotonic() - started < 40  # the bomb never ends by itself: it was stopped
    workdir = result.stdout.splitlines()[0]
    assert _processes_with(workdir) == []


@needs_root
def test_a_process_that_leaves_the_group_is_killed_too() -> None:
    program = """\
import os, time
pid = os.fork()
if pid == 0:
    os.setsid()  # a new session: out of reach of the process-group kill
    os.close(1); os.close(2)
    time.sleep(60)
    os._exit(0)
print(pid)
"""
    result = run_python(program, SandboxLimits(wall_seconds=10))
    assert result.ok, result.stderr
    assert not _alive(int(result.stdout))


@needs_root
def test_writing_outside_the_sandbox_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    program = f"open({str(target)!r}, 'w').write('pwned')"
    result = run_python(program)
    # refused by permissions, or (isolated) the host's directory is not even there
    assert result.exit_code == 1 and ("PermissionError" in result.stderr or "FileNotFoundError" in result.stderr)
    assert not target.exists()
    own = run_python("import os\nprint(os.getuid(), os.geteuid(), os.getgroups())")
    uid, euid, groups = own.stdout.split(maxsplit=2)
    assert uid == euid != "0" and groups.strip() == "[]"


def test_file_size_is_capped() -> None:
    program = "open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))"
    result = run_python(program, SandboxLimits(file_mb=1))
    assert result.exit_code == 1 and f"Errno {errno.EFBIG}" in result.stderr
    assert run_python(program, SandboxLimits(file_mb=4)).ok


def test_output_is_truncated_and_the_flood_does_not_block() -> None:
    program = "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\nprint('err', file=sys.stderr)"
    result = run_python(program, SandboxLimits(output_bytes=1000, wall_seconds=30))
    assert result.ok and result.truncated
    assert result.stdout == "x" * 1000 and result.stderr == "err\n"


def test_concurrent_runs_do_not_interfere() -> None:
    results = {}

    def one(i: int) -> None:
        results[i] = run_python(f"print({i} * {i})")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: r.stdout for i, r in results.items()} == {i: f"{i * i}\n" for i in range(6)}


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(wall_seconds=0)
    with pytest.raises(ValueError):
        SandboxLimits(memory_mb=1)
    with pytest.raises(ValueError):
        SandboxLimits(unknown=1)
