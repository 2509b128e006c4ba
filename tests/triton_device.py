"""Where a Triton kernel test runs its kernel: compiled on a CUDA GPU, interpreted on a CPU.

A plugin (tests/conftest.py loads it) with one fixture, `triton_device`. On a GPU
the kernels are compiled, as they are in use. On a CPU they run under Triton's
interpreter, `TRITON_INTERPRET=1`, which triton only honours when it is set
before triton is first imported (its own library functions are jitted then). So
the switch is never set inside the test process, where it would reach every
other test: a test that asks for `triton_device` in a CPU-only process started
without it is run again, with the other Triton tests of its module, in one
fresh `pytest` process started with the switch, and takes the outcome that this
very test had there (passed, failed with its report, or skipped with its reason).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

#: Whether this process started with the interpreter on (then Triton kernels run here, on the CPU).
_STARTED_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: One interpreted run per test module: its junit report, by module path.
_REPORTS: dict[str, ElementTree.Element] = {}


@pytest.fixture
def triton_device() -> torch.device:
    """The device the test's Triton kernel runs on (CPU tensors are run by the interpreter)."""
    pytest.importorskip("triton", reason="triton is not installed (it is in the `test` extra on Linux x86-64)")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _runs_elsewhere(item: pytest.Item) -> bool:
    return "triton_device" in getattr(item, "fixturenames", ()) and not torch.cuda.is_available() and not _STARTED_INTERPRETED


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """A Triton test this process cannot interpret: its outcome in an interpreted process instead."""
    if not _runs_elsewhere(pyfuncitem):
        return None
    case = _interpreted_report(pyfuncitem).find(f".//testcase[@name='{pyfuncitem.name}']")
    assert case is not None, f"{pyfuncitem.nodeid} did not run in the interpreted process"
    for outcome in ("failure", "error"):
        found = case.find(outcome)
        if found is not None:
            pytest.fail(f"under TRITON_INTERPRET=1: {found.get('message')}\n{found.text or ''}", pytrace=False)
    skipped = case.find("skipped")
    if skipped is not None:
        pytest.skip(f"under TRITON_INTERPRET=1: {skipped.get('message')}")
    return True


def _interpreted_report(item: pytest.Function) -> ElementTree.Element:
    module = str(item.path)
    if module not in _REPORTS:
        wanted = [i.nodeid for i in item.session.items if i.path == item.path and _runs_elsewhere(i)]
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "report.xml"
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *wanted],
                cwd=item.config.rootpath, env={**os.environ, "TRITON_INTERPRET": "1"},
                capture_output=True, text=True, timeout=1800,
            )
            assert report.exists(), done.stdout[-3000:] + done.stderr[-2000:]
            _REPORTS[module] = ElementTree.parse(report).getroot()
    return _REPORTS[module]
