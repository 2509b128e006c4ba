"""Where a benchmark's figures go: `bench/results/NAME-STAMP.md` and `.json`, each opening with
when, on what machine, under what load and by which command they were measured.

Every figure the documentation quotes must be traceable to a committed file that
says how it was produced, and the shared build machine's load moves speeds by
tens of percent, so the load averages at the start and the end of the run are
recorded beside every result. Start a `ResultsFile` before measuring (it notes
the start) and `write` it at the end.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from orchestra.machine import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _torch_version() -> str:
    try:
        import torch
    except ImportError:
        return "not installed"
    return torch.__version__


def measurement_context() -> dict:
    """When, where, under what load and by which command this process is measuring: a results header."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": _torch_version(),
        },
        "load": _load(),
    }


class ResultsFile:
    """One benchmark run's results file pair, its header captured when the run starts."""

    def __init__(self, name: str, out: Path = RESULTS):
        self.name = name
        self.out = Path(out)
        self.started = datetime.now(timezone.utc)
        context = measurement_context()
        load = context.pop("load")
        self.header = {**context, "date": self.started.isoformat(timespec="seconds"), "load_at_start": load}

    def write(self, title: str, markdown: str, data: dict) -> Path:
        """Write NAME-STAMP.md (header, then `markdown`) and NAME-STAMP.json (header and `data`); return the .md."""
        header = {**self.header, "load_at_end": _load()}
        machine = header["machine"]
        self.out.mkdir(parents=True, exist_ok=True)
        stem = self.out / f"{self.name}-{self.started:%Y%m%d-%H%M%S}"
        lines = [
            f"# {title}",
            "",
            f"- date: {header['date']}",
            f"- command: `{header['command']}`",
            (f"- machine: {machine['arch']}, {machine['cpus']} CPUs ({machine['cpu']}), "
             f"python {machine['python']}, torch {machine['torch']}"),
            f"- load average (1, 5, 15 min): {header['load_at_start']} at the start, {header['load_at_end']} at the end",
            "",
            markdown.rstrip(),
            "",
        ]
        stem.with_suffix(".md").write_text("\n".join(lines))
        stem.with_suffix(".json").write_text(json.dumps({**header, **data}, indent=2) + "\n")
        return stem.with_suffix(".md")
