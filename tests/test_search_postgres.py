"""A search study shared through a real PostgreSQL server: two workers, and a killed worker resumed.

The test starts its own server (initdb into a temporary folder, a free loopback
port, its socket in the same folder) and stops it afterwards. PostgreSQL refuses
to run as root, so as root the server runs as `nobody`. CI installs the
`postgresql` package when no initdb is found (see .ci/run).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from search_fixtures import fake_space, write_split_sums

from orchestra.search.space import space_from_dict
from orchestra.search.study import FINISHED, SearchSettings

pytest.importorskip("psycopg")
TESTS = Path(__file__).resolve().parent


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    home = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    home.chmod(0o777)
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    data, port = home / "data", _free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "orchestra", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "start",
                    "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        yield f"postgresql://orchestra@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _settings(tmp_path: Path, url: str, name: str, trials: int, replay: bool = True, heartbeat_seconds: int = 1) -> Path:
    from orchestra.search.study import storage_url

    settings = SearchSettings(
        space=space_from_dict(fake_space()), task=write_split_sums(tmp_path / "sums.jsonl", dev=4),
        trials=trials, dev_limit=4, first_rung=None, storage=storage_url(url, tmp_path), study_name=name,
        cache=str(tmp_path / "cache.sqlite"), heartbeat_seconds=heartbeat_seconds, replay=replay,
    )
    path = tmp_path / f"{name}.json"
    path.write_text(settings.model_dump_json())
    return path


def _worker(
    settings: Path, index: int, delay: float, barrier: Path | None = None, hang: Path | None = None
) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if hang is not None:
        env["SEARCH_WORKER_HANG_DIR"] = str(hang)
    extra = [str(barrier)] if barrier else []
    return subprocess.Popen([sys.executable, str(TESTS / "search_worker.py"), str(settings), str(index), str(delay), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg://"))


def test_two_workers_share_one_study(tmp_path: Path, postgres_url: str) -> None:
    settings = _settings(tmp_path, postgres_url, "shared", trials=8, heartbeat_seconds=30)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [_worker(settings, i, delay=0.2, barrier=barrier) for i in range(2)]
    deadline = time.monotonic() + 240
    while not all((barrier / f"ready-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), [w.communicate()[0] for w in workers]
        time.sleep(0.1)
    (barrier / "go").touch()
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = _study(postgres_url, "shared")
    finished = study.get_trials(states=FINISHED)
    assert 8 <= len(finished) <= 9  # each worker checks the shared count after its own trial
    assert len({t.user_attrs["worker"] for t in finished}) == 2, "both workers ran trials"
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


def test_a_killed_worker_is_resumed_without_redoing_finished_trials(tmp_path: Path, postgres_url: str) -> None:
    # no replay: every trial calls the model, so a trial is under way whenever the worker hangs;
    # a 60 s heartbeat: the rerun knows the killed trial is orphaned from its process being gone
    settings = _settings(tmp_path, postgres_url, "killed", trials=6, replay=False, heartbeat_seconds=60)
    hang = tmp_path / "hang"
    hang.mkdir()
    worker = _worker(settings, 0, delay=0.05, hang=hang)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # two finished trials, then the worker stops inside the next one
        time.sleep(0.2)
        assert worker.poll() is None, worker.communicate()[0]
        try:
            done = [t for t in _study(postgres_url, "killed").trials if t.state in FINISHED]
        except KeyError:
            continue
        if len(done) >= 2:
            (hang / "hang").touch()
        if (hang / "hung").exists():
            break
    else:
        worker.kill()
        pytest.fail("the worker did not finish two trials in time: " + (worker.communicate()[0] or ""))
    worker.kill()
    worker.wait()
    before = {t.number: t.datetime_complete for t in _study(postgres_url, "killed").trials if t.state in FINISHED}
    killed = [t.number for t in _study(postgres_url, "killed").trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1
    again = _worker(settings, 0, delay=0.0)
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    study = _study(postgres_url, "killed")
    states = {t.number: t.state for t in study.trials}
    assert states[killed[0]] == optuna.trial.TrialState.FAIL
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 6
    assert {n: study.trials[n].datetime_complete for n in before} == before, "finished trials were not redone"
    assert any(t.system_attrs.get("failed_trial") == killed[0] for t in finished), "the killed trial was retried"
