"""A search worker process on the fake model, for the multi-worker tests.

Usage: python tests/search_worker.py SETTINGS.json WORKER_INDEX CALL_DELAY_SECONDS [BARRIER_DIR]

With BARRIER_DIR, the worker writes BARRIER_DIR/ready-INDEX once imported and waits
for BARRIER_DIR/go, so workers of a test start their trials together however
long each took to start on a loaded machine.

With SEARCH_WORKER_HANG_DIR set, a model call made while HANG_DIR/hang exists
writes HANG_DIR/hung and never returns: the worker stops inside a trial, which
stays RUNNING in the study until the test kills the process — a kill at a known
point, not at whatever moment the machine's load makes it.

It is what a second machine running `orchestra search ... --storage postgresql://...`
does, with the fake backend registered first (a subprocess cannot share the
test's in-process registration).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_backend import FakeBackend  # noqa: E402

from orchestra.backends import BACKENDS  # noqa: E402
from orchestra.search.study import SearchSettings, run_worker  # noqa: E402

if __name__ == "__main__":
    settings_path, worker, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    BACKENDS.add("fake", FakeBackend)
    hang = os.environ.get("SEARCH_WORKER_HANG_DIR")

    def call_delay(request, prompt) -> float:
        if hang and (Path(hang) / "hang").exists():
            (Path(hang) / "hung").touch()
            return 3600.0
        return delay

    FakeBackend.delay = call_delay
    if len(sys.argv) > 4:
        barrier = Path(sys.argv[4])
        (barrier / f"ready-{worker}").touch()
        while not (barrier / "go").exists():
            time.sleep(0.05)
    run_worker(SearchSettings.model_validate_json(Path(settings_path).read_text()), worker)
