"""Running model-written Python without letting it hurt the host.

Model code is untrusted in the boring sense: a weak model writes infinite
loops, allocates without bound, forks in loops and prints forever far more
often than it writes anything malicious. The sandbox contains those failures
and keeps the parent's secrets out of reach:

- a fresh interpreter (`python -I`: no user site, no PYTHON* variables) in an
  empty temporary directory, which is its HOME and TMPDIR;
- a minimal environment built from scratch, so nothing the parent holds
  (API keys, tokens) is inherited;
- resource limits set before the program's first line runs: CPU seconds,
  address space, processes, file size, no core dumps;
- a wall-clock deadline that kills the whole process group, children included;
- stdout and stderr read as they come and cut at a byte limit, so a program
  that prints forever costs the parent nothing.

When orchestra runs as root (containers), rlimits alone are weak: root may
write anywhere and RLIMIT_NPROC does not bind it. The child then runs under a
fresh, otherwise unused uid/gid picked for that one run (no supplementary
groups), so file permissions apply, the process limit counts only this run's
processes, and after the run every process left with that uid -- even one that
escaped the process group with setsid() -- is killed. The interpreter must be
executable by an unprivileged user; the first one that is (this one, else a
system `python3`) is found once by trying it.

What it does not do: network isolation, a read-only view of the filesystem
(world-readable files stay readable; world-writable places such as /tmp stay
writable, each file capped at `file_mb`), or protection against code written
to forge its own results. Without root, only the rlimits, the process group,
the empty directory and the clean environment apply.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Where the per-run uids and gids come from: far above ordinary and system ids.
_ID_BASE = 0x4F000000
_ID_SPAN = 1 << 20

# Runs inside the child before any untrusted line: caps resources, then hands over.
# argv: [-c, limits-json, program-path]. Lowering a hard limit cannot be undone
# by an unprivileged process, so the program cannot raise them back.
_BOOTSTRAP = """\
import json, resource, runpy, sys
def _cap(kind, soft, hard=None):
    hard = soft if hard is None else hard
    old_soft, old_hard = resource.getrlimit(kind)
    if old_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(kind, (soft, hard))
_limits = json.loads(sys.argv[1])
_cap(resource.RLIMIT_CORE, 0)
if _limits["cpu"] is not None:
    _cap(resource.RLIMIT_CPU, _limits["cpu"], _limits["cpu"] + 1)
if _limits["memory"] is not None:
    _cap(resource.RLIMIT_AS, _limits["memory"])
if _limits["fsize"] is not None:
    _cap(resource.RLIMIT_FSIZE, _limits["fsize"])
if _limits["nproc"] is not None and hasattr(resource, "RLIMIT_NPROC"):
    _cap(resource.RLIMIT_NPROC, _limits["nproc"])
_program = sys.argv[2]
sys.argv = [_program]
del json, resource, _cap, _limits
runpy.run_path(_program, run_name="__main__")
"""


class SandboxLimits(BaseModel):
    """What one run may use. `None` leaves a resource uncapped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_seconds: float = Field(default=10.0, gt=0, description="Deadline; the whole process group is killed at it.")
    cpu_seconds: float | None = Field(default=10.0, gt=0, description="CPU time (SIGXCPU, then SIGKILL a second later).")
    memory_mb: int | None = Field(default=1024, ge=16, description="Address-space cap of each process.")
    processes: int | None = Field(default=16, ge=1, description="Processes and threads the run may have at once.")
    file_mb: int | None = Field(default=16, ge=0, description="Largest file the run may write.")
    output_bytes: int = Field(default=64_000, ge=0, description="stdout and stderr are each cut at this many bytes.")


class SandboxResult(BaseModel):
    """What a run did. `exit_code` is negative when a signal ended it, None when the deadline did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    truncated: bool = Field(description="Whether stdout or stderr was cut at `output_bytes`.")
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not: the program failed)."""


# At most one sandboxed program per core at once: the deadline and CPU limits are
# then about the program, not about how many others share the machine with it.
_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def run_python(source: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report what happened.

    Blocking; call it from a worker thread (`asyncio.to_thread`) in async code.
    """
    with _slots:
        return _run(source, limits)


def drops_privileges() -> bool:
    """Whether programs run under a throwaway uid (orchestra runs as root and a
    Python interpreter is executable by an unprivileged user)."""
    return _interpreter()[1]


def _run(source: str, limits: SandboxLimits) -> SandboxResult:
    python, drop = _interpreter()
    ident = _ID_BASE + random.SystemRandom().randrange(_ID_SPAN) if drop else None
    with tempfile.TemporaryDirectory(prefix="orchestra-sandbox-", ignore_cleanup_errors=True) as workdir:
        program = Path(workdir) / "program.py"
        program.write_text(source, encoding="utf-8")
        if ident is not None:
            os.chown(workdir, ident, ident)
            os.chown(program, ident, ident)
        child_limits = {
            "cpu": math.ceil(limits.cpu_seconds) if limits.cpu_seconds else None,
            "memory": limits.memory_mb * 1024 * 1024 if limits.memory_mb else None,
            "fsize": limits.file_mb * 1024 * 1024 if limits.file_mb is not None else None,
            # a fresh uid owns no other process; otherwise the user's own processes count too
            "nproc": None if limits.processes is None
            else limits.processes + (0 if ident is not None else _processes_of(os.getuid())),
        }
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        started = time.monotonic()
        proc = subprocess.Popen(
            [python, "-I", "-c", _BOOTSTRAP, json.dumps(child_limits), str(program)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so the deadline kills its children too
            close_fds=True,
            **({"user": ident, "group": ident, "extra_groups": []} if ident is not None else {}),
        )
        try:
            (stdout, stderr), truncated, timed_out = _collect(proc, started + limits.wall_seconds, limits.output_bytes)
        finally:
            _kill_group(proc.pid)
            if ident is not None:
                _kill_uid(ident)
            proc.wait()
        seconds = time.monotonic() - started
    return SandboxResult(
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        truncated=truncated,
        seconds=seconds,
    )


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[tuple[bytes, bytes], bool, bool]:
    """Read both pipes until they close or the deadline passes; keep the first `cap`
    bytes of each and drain the rest, so a chatty program neither blocks nor floods us.
    Returns ((stdout, stderr), truncated, timed_out)."""
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    truncated = False
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(timeout=remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                room = cap - len(buffer)
                if len(chunk) > room:
                    truncated = True
                buffer += chunk[: max(room, 0)]
        open_pipes = bool(selector.get_map())
    # the pipes closed: the program (and anything it started) is done; wait briefly for its status
    if not open_pipes:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    timed_out = proc.poll() is None
    for stream in buffers:
        stream.close()
    return (bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr])), truncated, timed_out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_of(uid: int) -> list[int]:
    """Live processes whose real uid is `uid` (Linux /proc; empty elsewhere)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("State:") and ("Z" in line.split()[1] or "X" in line.split()[1]):
                        break  # a zombie is already dead; its parent reaps it
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _processes_of(uid: int) -> int:
    return len(_pids_of(uid))


def _kill_uid(uid: int) -> None:
    """Kill every process of a throwaway uid, including ones that left the process group.
    Repeats while some remain: a process may fork between the scan and the kill, but
    RLIMIT_NPROC bounds how many there can be."""
    for _ in range(50):
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


@functools.lru_cache(maxsize=1)
def _interpreter() -> tuple[str, bool]:
    """(interpreter, drop privileges?). Not root: this interpreter, no drop. Root: the first
    interpreter an unprivileged uid can start; if none can, warn and run without dropping."""
    if not hasattr(os, "getuid") or os.getuid() != 0:
        return sys.executable, False
    choices = [sys.executable, getattr(sys, "_base_executable", None), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
    probe_id = _ID_BASE + _ID_SPAN  # just past the per-run range: never collides with a run
    for python in dict.fromkeys(c for c in choices if c):
        try:
            done = subprocess.run(
                [python, "-I", "-c", "import resource, runpy, json"],
                cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                capture_output=True, timeout=30, user=probe_id, group=probe_id, extra_groups=[],
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return python, True
    warnings.warn(
        "orchestra runs as root but no Python interpreter is executable by an unprivileged user; "
        "sandboxed code runs as root with rlimits only (install a system python3 to fix this)",
        RuntimeWarning,
        stacklevel=3,
    )
    return sys.executable, False
