"""The sandbox's namespaces: no network, a private size-capped filesystem, no view of the user's files.

Each protection is proved by a program that tries to get past it. Where the machine
does not allow namespaces (not root, or no CAP_SYS_ADMIN) these tests skip, naming why;
as root on Linux they run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

import pytest

from orchestra.code_execution.sandbox import SandboxLimits, capabilities, run_python

_caps = capabilities()
needs_no_network = pytest.mark.skipif(
    not _caps.no_network, reason="no network namespace here (needs root with CAP_SYS_ADMIN); see sandbox.capabilities()"
)
needs_private_filesystem = pytest.mark.skipif(
    not _caps.private_filesystem, reason="no mount namespace here (needs root with CAP_SYS_ADMIN); see sandbox.capabilities()"
)
needs_disk_cap = pytest.mark.skipif(
    not _caps.disk_cap, reason="no size-capped tmpfs here (needs root with CAP_SYS_ADMIN); see sandbox.capabilities()"
)


def _machine_allows_namespaces() -> bool:
    """Whether a child of this process, as it is, can enter new mount and network namespaces."""
    if not sys.platform.startswith("linux") or os.getuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(0x00020000 | 0x40000000) == 0 else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_capabilities_say_what_holds() -> None:
    assert _caps.no_network == _caps.private_filesystem == _caps.disk_cap
    if _caps.private_filesystem:
        assert _caps.throwaway_uid  # the namespaces are set up as root, then the run drops to its own uid
    # where the machine allows namespaces the sandbox uses them: the tests below never skip here
    assert _caps.no_network == _machine_allows_namespaces()


@pytest.fixture
def listener():
    """A loopback TCP listener on the host."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


@needs_no_network
def test_cannot_connect_to_a_loopback_service_of_the_host(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    program = f"""\
import socket
import sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    print("connected")
except OSError as error:
    print("refused", type(error).__name__)
"""
    result = run_python(program)
    assert result.ok, result.stderr
    assert result.stdout.startswith("refused"), result.stdout
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever arrived


@needs_no_network
def test_a_port_bound_inside_is_not_the_hosts(listener: socket.socket) -> None:
    # the host already listens on this port: binding it succeeds only in a network of its own
    port = listener.getsockname()[1]
    program = f"""\
import socket
import sys
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen()
client = socket.create_connection(("127.0.0.1", {port}), timeout=5)
peer, _ = server.accept()
client.sendall(b"ping")
print(peer.recv(4).decode())
"""
    result = run_python(program)
    assert result.ok, result.stderr
    assert result.stdout == "ping\n"  # its own loopback works, and is its own
    with pytest.raises(BlockingIOError):
        listener.accept()


@needs_private_filesystem
def test_files_written_to_tmp_var_tmp_and_dev_shm_do_not_outlive_the_run() -> None:
    name = f"orchestra-sandbox-test-{secrets.token_hex(6)}"
    places = [f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}"]
    program = f"""\
for path in {places!r}:
    with open(path, "w") as file:
        file.write("left behind?")
    print(open(path).read())
"""
    try:
        result = run_python(program)
        assert result.ok, result.stderr
        assert result.stdout == "left behind?\n" * 3  # the writes worked, in a place of its own
        assert [path for path in places if os.path.lexists(path)] == []
    finally:
        for path in places:
            if os.path.lexists(path):
                os.remove(path)


@pytest.fixture
def user_files(monkeypatch: pytest.MonkeyPatch):
    """A world-readable HOME with a generation cache in it, outside /tmp (as a user's is)."""
    home = Path(__file__).resolve().parent / f".sandbox-home-{secrets.token_hex(6)}"
    cache = home / ".cache" / "orchestra"
    cache.mkdir(parents=True)
    for folder in (home, home / ".cache", cache):
        folder.chmod(0o755)
    secret = cache / "generations.db"
    secret.write_text("the user's cached generations")
    secret.chmod(0o644)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ORCHESTRA_HOME", str(cache))
    try:
        yield secret
    finally:
        shutil.rmtree(home)


@needs_private_filesystem
def test_the_users_files_are_not_visible(user_files: Path) -> None:
    program = f"""\
import os
for path in ({str(user_files)!r}, {str(user_files.parent)!r}, "/root", "/home", "/proc/1/cmdline", {os.getcwd()!r}):
    print(path, os.path.exists(path))
try:
    open({str(user_files)!r}).read()
except OSError as error:
    print(type(error).__name__)
"""
    result = run_python(program)
    assert result.ok, result.stderr
    *seen, error = result.stdout.splitlines()
    assert all(line.endswith(" False") for line in seen), seen
    assert error == "FileNotFoundError"  # not denied: not there at all
    assert "the user's cached generations" not in result.stdout


@needs_private_filesystem
def test_the_system_is_read_only() -> None:
    result = run_python("open('/usr/orchestra-sandbox-test', 'w')")
    assert result.exit_code == 1 and f"Errno {errno.EROFS}" in result.stderr
    assert not os.path.exists("/usr/orchestra-sandbox-test")


@needs_disk_cap
def test_all_writes_together_are_capped() -> None:
    # 4 MB files, each under the per-file cap, spread over every writable place, until the disk is full
    program = """\
import errno, itertools
written = 0
try:
    for index in itertools.count():
        folder = ("/tmp", "/var/tmp", "/dev/shm", ".")[index % 4]
        with open(f"{folder}/chunk{index}", "wb") as file:
            for _ in range(4):
                file.write(b"x" * (1024 * 1024))
                file.flush()
                written += 1024 * 1024
except OSError as error:
    print(written // (1024 * 1024), error.errno == errno.ENOSPC)
"""
    result = run_python(program, SandboxLimits(disk_mb=10, file_mb=5))
    assert result.ok, result.stderr
    megabytes, full = result.stdout.split()
    assert full == "True" and 8 <= int(megabytes) <= 10
    # a larger cap lets the same program write more: the cap, not the program, stopped it
    bigger = run_python(program, SandboxLimits(disk_mb=20, file_mb=5))
    assert bigger.ok and 18 <= int(bigger.stdout.split()[0]) <= 20


def test_without_namespaces_programs_still_run_with_what_remains() -> None:
    # the fallback a machine without namespaces gets (here forced): the host's view, rlimits, stdin and report
    from orchestra.code_execution import sandbox

    mode = sandbox._mode()
    fallback = sandbox._Mode(mode.python, mode.drop, False, mode.python_paths)
    program = "import os, sys\nprint(os.path.isdir('/proc/self'), sys.stdin.read())\nos.write(3, b'reported')\n"
    result = sandbox._run(program, SandboxLimits(), b"given", fallback)
    assert result.ok, result.stderr
    assert result.stdout == "True given\n" and result.report == "reported"
    too_big = sandbox._run("open('big', 'wb').write(b'x' * 2 * 1024 * 1024)", SandboxLimits(file_mb=1), b"", fallback)
    assert too_big.exit_code == 1 and f"Errno {errno.EFBIG}" in too_big.stderr
