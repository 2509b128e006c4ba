"""Running model-written Python without letting it hurt the host or see the user's files.

Model code is untrusted in the boring sense: a weak model writes infinite
loops, allocates without bound, forks in loops and prints forever far more
often than it writes anything malicious. The sandbox contains those failures
and keeps the parent's secrets out of reach:

- a fresh interpreter (`python -I`: no user site, no PYTHON* variables) in an
  empty directory, which is its HOME and TMPDIR;
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
escaped the process group with setsid() -- is killed.

Root can also give the run namespaces of its own (`isolated`), set up by the
bootstrap before it drops to that uid:

- a network namespace: no route to the host's loopback services or anything
  else; a port bound inside is unreachable from the host;
- a mount namespace whose root is a fresh tmpfs of `disk_mb` (all the run may
  write, /tmp, /var/tmp and /dev/shm included, together), holding read-only
  binds of the system directories (/usr, /etc, ...) and of the Python
  installation, and nothing else: no /home, /root, /proc, no generation cache,
  no run folders. It vanishes with the run's last process;
- an IPC namespace, so System V and POSIX message queues are private too.

`capabilities()` says which protections hold on this machine. Where
namespaces are not allowed (not root, or a container without CAP_SYS_ADMIN)
the run keeps the rlimits, the process group, the clean environment and the
throwaway uid where root allows it, and warns once: world-readable files then
stay readable, world-writable places such as /tmp stay writable (each file
capped at `file_mb`, with no total), and the network is the host's.

Besides stdout and stderr a program gets a third channel, file descriptor 3,
whose bytes come back as `SandboxResult.report`, and may be given bytes on its
stdin: harnesses use them to report verdicts apart from what the code prints
(see `verdict_channel`). The sandbox contains damage; it does not stop code
written to forge the results of a harness running in its own process.
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
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

#: Where the per-run uids and gids come from: far above ordinary and system ids.
_ID_BASE = 0x4F000000
_ID_SPAN = 1 << 20

#: The file descriptor a program reports on (`SandboxResult.report`).
REPORT_FD = 3

#: System directories an isolated run sees, read-only (those that exist here).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: Device files an isolated run gets (bound from the host).
_DEVICES = ("null", "zero", "full", "random", "urandom")

# Runs inside the child before any untrusted line. argv: [-c, config-json, workdir];
# stdin: the program's size in bytes on a line, its UTF-8 source, then the program's own stdin.
# Isolated: as root, it enters new network, mount and IPC namespaces, builds a
# root of a size-capped tmpfs with read-only binds of what Python needs, chroots
# into it and drops to the run's throwaway uid. Then it caps resources (lowering
# a hard limit cannot be undone by an unprivileged process) and runs the program.
_BOOTSTRAP = """\
import json, os, resource, runpy, sys
_config = json.loads(sys.argv[1])
_workdir = sys.argv[2]
def _read_exactly(count):
    data = b""
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            raise EOFError("the sandbox sent a short program")
        data += chunk
    return data
_size = b""
while not _size.endswith(b"\\n"):
    _size += _read_exactly(1)
_source = _read_exactly(int(_size)).decode("utf-8")  # unbuffered: the rest of stdin stays the program's
if _config["report_fd"] != 3:
    os.dup2(_config["report_fd"], 3)
    os.close(_config["report_fd"])

def _isolate(root, binds, devices, disk_bytes, uid):
    import _socket, ctypes, fcntl  # not socket: importing it costs more than the rest of the set-up
    libc = ctypes.CDLL(None, use_errno=True)
    def call(result, what):
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, what + ": " + os.strerror(code))
    def mount(source, target, fstype, flags, data=None):
        encode = lambda text: None if text is None else text.encode()
        call(libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)), "mount " + target)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
    call(libc.unshare(0x00020000 | 0x40000000 | 0x08000000), "unshare")  # CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("orchestra-sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,nr_inodes=16384,mode=755" % disk_bytes)
    for path in binds:
        inside = root + path
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), inside)
            continue
        os.makedirs(inside, exist_ok=True)
        mount(path, inside, None, MS_BIND | MS_REC)
        mount(None, inside, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    for name in devices:
        inside = root + "/dev/" + name
        os.makedirs(root + "/dev", exist_ok=True)
        open(inside, "w").close()
        mount("/dev/" + name, inside, None, MS_BIND)
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        os.makedirs(root + path, exist_ok=True)
        os.chmod(root + path, 0o1777)
    os.makedirs(root + _workdir, exist_ok=True)
    os.chown(root + _workdir, uid, uid)
    os.chroot(root)
    os.chdir(_workdir)
    sock = _socket.socket()  # the namespace's own loopback, up, for programs that talk to themselves
    fcntl.ioctl(sock.fileno(), 0x8914, b"lo".ljust(16, b"\\0") + (1).to_bytes(2, sys.byteorder))  # SIOCSIFFLAGS, IFF_UP
    sock.close()

if _config["isolate"]:
    _isolate(_workdir, _config["binds"], _config["devices"], _config["disk"], _config["uid"])
if _config["uid"] is not None:
    os.setgroups([])
    os.setgid(_config["uid"])
    os.setuid(_config["uid"])
_program = os.path.join(_workdir, "program.py")
with open(_program, "w", encoding="utf-8") as _file:
    _file.write(_source)

def _cap(kind, soft, hard=None):
    hard = soft if hard is None else hard
    old_soft, old_hard = resource.getrlimit(kind)
    if old_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(kind, (soft, hard))
_limits = _config["limits"]
_cap(resource.RLIMIT_CORE, 0)
if _limits["cpu"] is not None:
    _cap(resource.RLIMIT_CPU, _limits["cpu"], _limits["cpu"] + 1)
if _limits["memory"] is not None:
    _cap(resource.RLIMIT_AS, _limits["memory"])
if _limits["fsize"] is not None:
    _cap(resource.RLIMIT_FSIZE, _limits["fsize"])
if _limits["nproc"] is not None and hasattr(resource, "RLIMIT_NPROC"):
    _cap(resource.RLIMIT_NPROC, _limits["nproc"])
sys.argv = [_program]
del json, resource, _cap, _limits, _config, _source, _file, _size, _read_exactly
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
    disk_mb: int = Field(
        default=64, ge=1, description="All the run may write, together (isolated runs only: the size of its tmpfs)."
    )
    output_bytes: int = Field(
        default=64_000, ge=0, description="stdout, stderr and the report channel are each cut at this many bytes."
    )


class SandboxResult(BaseModel):
    """What a run did. `exit_code` is negative when a signal ended it, None when the deadline did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    report: str = Field(default="", description=f"What the program wrote to file descriptor {REPORT_FD}.")
    truncated: bool = Field(description="Whether stdout, stderr or the report was cut at `output_bytes`.")
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SandboxCapabilities(BaseModel):
    """Which protections hold on this machine, beyond the rlimits, deadline, process group
    and clean environment that hold everywhere."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    throwaway_uid: bool = Field(description="Programs run under a fresh unprivileged uid (file permissions apply).")
    no_network: bool = Field(description="A network namespace of its own: no host services, no reachable ports.")
    private_filesystem: bool = Field(
        description="A private root: only system directories and the Python installation, read-only; "
        "the user's files, /proc and the host's /tmp, /var/tmp and /dev/shm unseen."
    )
    disk_cap: bool = Field(description="All writes together are capped at `disk_mb`, and vanish with the run.")


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not: the program failed)."""


# At most one sandboxed program per core at once: the deadline and CPU limits are
# then about the program, not about how many others share the machine with it.
_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def run_python(source: str, limits: SandboxLimits = SandboxLimits(), *, stdin: bytes = b"") -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report what happened.
    `stdin` is what the program reads on its standard input.

    Blocking; call it from a worker thread (`asyncio.to_thread`) in async code.
    """
    with _slots:
        return _run(source, limits, stdin, _mode())


def capabilities() -> SandboxCapabilities:
    """Which protections programs get here (probed once per process)."""
    mode = _mode()
    return SandboxCapabilities(
        throwaway_uid=mode.drop, no_network=mode.isolate, private_filesystem=mode.isolate, disk_cap=mode.isolate
    )


def drops_privileges() -> bool:
    """Whether programs run under a throwaway uid (orchestra runs as root and a
    Python interpreter is executable by an unprivileged user)."""
    return _mode().drop


def _run(source: str, limits: SandboxLimits, stdin: bytes, mode: _Mode) -> SandboxResult:
    python, drop, isolate = mode.python, mode.drop, mode.isolate
    ident = _ID_BASE + random.SystemRandom().randrange(_ID_SPAN) if drop else None
    with tempfile.TemporaryDirectory(prefix="orchestra-sandbox-", ignore_cleanup_errors=True) as workdir:
        if ident is not None and not isolate:
            os.chown(workdir, ident, ident)
        config = {
            "isolate": isolate,
            "uid": ident,
            "binds": _bind_paths(mode.python_paths) if isolate else [],
            "devices": list(_DEVICES),
            "disk": limits.disk_mb * 1024 * 1024,
            "limits": {
                "cpu": math.ceil(limits.cpu_seconds) if limits.cpu_seconds else None,
                "memory": limits.memory_mb * 1024 * 1024 if limits.memory_mb else None,
                "fsize": limits.file_mb * 1024 * 1024 if limits.file_mb is not None else None,
                # a fresh uid owns no other process; otherwise the user's own processes count too
                "nproc": None if limits.processes is None
                else limits.processes + (0 if ident is not None else _processes_of(os.getuid())),
            },
        }
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        report_read, report_write = os.pipe()
        config["report_fd"] = report_write
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [python, "-I", "-c", _BOOTSTRAP, json.dumps(config), workdir],
                cwd=workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so the deadline kills its children too
                close_fds=True,
                pass_fds=(report_write,),
            )
        finally:
            os.close(report_write)
        report = os.fdopen(report_read, "rb")
        encoded = source.encode("utf-8")
        feeder = threading.Thread(target=_feed, args=(proc.stdin, b"%d\n" % len(encoded) + encoded + stdin), daemon=True)
        feeder.start()
        try:
            (stdout, stderr, reported), truncated, timed_out = _collect(
                proc, report, started + limits.wall_seconds, limits.output_bytes
            )
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
        report=reported.decode("utf-8", "replace"),
        truncated=truncated,
        seconds=seconds,
    )


def _feed(pipe, data: bytes) -> None:
    """Write the program's source and stdin, then close it; a program that stops reading is no error."""
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _collect(
    proc: subprocess.Popen, report, deadline: float, cap: int
) -> tuple[tuple[bytes, bytes, bytes], bool, bool]:
    """Read stdout, stderr and the report channel until they close or the deadline passes;
    keep the first `cap` bytes of each and drain the rest, so a chatty program neither
    blocks nor floods us. Returns ((stdout, stderr, report), truncated, timed_out)."""
    streams = (proc.stdout, proc.stderr, report)
    buffers = {stream: bytearray() for stream in streams}
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
    return tuple(bytes(buffers[stream]) for stream in streams), truncated, timed_out


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


class _Mode(NamedTuple):
    """How runs are made on this machine: found once, by trying."""

    python: str
    drop: bool  # under a throwaway uid
    isolate: bool  # in namespaces of their own, with a private root
    python_paths: tuple[str, ...]  # the interpreter's installation, bound into the private root


#: Prints the interpreter's installation directories; a probe runs it.
_PREFIXES = "import json, sys; print(json.dumps(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})))"


def _bind_paths(python_paths: tuple[str, ...]) -> list[str]:
    """What an isolated run sees of the host: the system directories and the Python
    installation it runs from, nothing else."""
    paths = [p for p in _SYSTEM_PATHS if os.path.lexists(p)]
    for path in python_paths:
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
            paths.append(path)
    return paths


@functools.lru_cache(maxsize=1)
def _mode() -> _Mode:
    """Root: namespaces when a probe run in them works, else the throwaway uid alone. Not
    root: neither. What is missing is said once, in a warning."""
    if not hasattr(os, "getuid") or os.getuid() != 0:
        warnings.warn(
            "orchestra does not run as root: sandboxed code runs under your uid with rlimits only "
            "(no network namespace, no private filesystem, no total disk cap; see sandbox.capabilities())",
            RuntimeWarning,
            stacklevel=3,
        )
        return _Mode(sys.executable, False, False, ())
    python, drop, python_paths = _interpreter()
    isolated = _Mode(python, True, True, python_paths)
    probe = _run("import socket\nsocket.socket().close()\n", SandboxLimits(wall_seconds=30, cpu_seconds=30), b"", isolated)
    if probe.ok:
        return isolated
    reason = (probe.stderr.strip().splitlines() or [f"exit code {probe.exit_code}"])[-1]
    warnings.warn(
        f"the sandbox cannot create namespaces here ({reason}): sandboxed code keeps the host's network "
        "and filesystem view, with rlimits" + (" and a throwaway uid" if drop else "") + " only; "
        "see sandbox.capabilities()",
        RuntimeWarning,
        stacklevel=3,
    )
    return _Mode(python, drop, False, python_paths)


@functools.lru_cache(maxsize=1)
def _interpreter() -> tuple[str, bool, tuple[str, ...]]:
    """(interpreter, can an unprivileged uid start it?, its installation directories), for root:
    the first interpreter an unprivileged uid can start (faster to start than a venv's, and
    usable without namespaces); if none can, this one, and a warning."""
    choices = [sys.executable, getattr(sys, "_base_executable", None), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
    probe_id = _ID_BASE + _ID_SPAN  # just past the per-run range: never collides with a run
    for python in dict.fromkeys(c for c in choices if c):
        try:
            done = subprocess.run(
                [python, "-I", "-c", "import resource, runpy\n" + _PREFIXES],
                cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                capture_output=True, timeout=30, user=probe_id, group=probe_id, extra_groups=[],
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return python, True, tuple(json.loads(done.stdout))
    warnings.warn(
        "orchestra runs as root but no Python interpreter is executable by an unprivileged user; "
        "without namespaces sandboxed code runs as root with rlimits only (install a system python3 to fix this)",
        RuntimeWarning,
        stacklevel=3,
    )
    return sys.executable, False, tuple(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}))
