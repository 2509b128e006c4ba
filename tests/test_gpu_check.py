"""The GPU check (scripts/gpu_check.sh, bench/gpu_check.py) works before a GPU ever runs it: the
shell script parses, and the dry run — every section, on the CPU, over a tiny random Llama with
the static-shape path standing in for CUDA graphs — passes its correctness checks and writes its results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_shell_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0


def test_the_dry_run_passes_every_section_and_writes_its_results(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = tmp_path.glob("gpu_check-*.json")
    result = json.loads(found.read_text())
    assert result["failures"] == [] and result["dry_run"]
    sections = result["sections"]
    assert set(sections) == {"graph_sharing", "long_contexts", "speculative", "throughput", "eager_step"}
    assert sections["graph_sharing"]["batch_1_after_draft"]["identical_tokens"]
    assert sections["long_contexts"]["long_prompt"]["identical_tokens"]
    assert sections["long_contexts"]["grows_past_pool"]["identical_tokens"]
    assert {"prompt_lookup", "token_recycling", "layer_skip"} <= set(sections["speculative"])
    assert sections["eager_step"]["host_work_per_decode_step"] == {"reads": 1, "uploads": 1}
    assert "all checks passed" in next(tmp_path.glob("gpu_check-*.md")).read_text()
