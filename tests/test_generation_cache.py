"""The generation cache: what its key holds, what it never stores, and a damaged file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from fake_backend import fake_backend, vote_recipe, write_sums  # noqa: F401  (fixture)
from typer.testing import CliRunner

from orchestra.backends import Completion, GenerationRequest, ModelSpec
from orchestra.backends.local import LocalBackend
from orchestra.cache import CacheCorrupted, GenerationCache, request_key
from orchestra.cli import app
from orchestra.problem import Message

QUESTION = (Message(role="user", content="Compute 2 + 3"),)
PARTIAL = (*QUESTION, Message(role="assistant", content="It is"))
MODEL = "local:smollm2-135m-instruct:float32"


def key(request: GenerationRequest) -> str:
    return request_key(MODEL, "rendered text", request)


def test_keys_of_requests_without_continuation_ids_are_what_they_were():
    """Golden values from before continuation ids were keyed: shipped replay files still match."""
    plain = GenerationRequest(messages=QUESTION, n=4, seed=7, temperature=0.7, max_tokens=64)
    raw = GenerationRequest(prompt="abc", seed=3, logprobs=True)
    assert key(plain) == "04a281f72e2639802ecd8dd85d8d3d11854796357460c2d02b72021ed827924b"
    assert key(raw) == "92605cfcee36d0189ef3f3663fc4ad3113fea77a9e2e135b37f5ec5340bb5d9b"


def test_continuations_with_the_same_text_but_other_tokens_have_their_own_keys():
    one = GenerationRequest(messages=PARTIAL, seed=1, continuation_ids=(5, 6))
    other = one.model_copy(update={"continuation_ids": (56,)})
    assert key(one) != key(other)
    assert key(one) == key(GenerationRequest(messages=PARTIAL, seed=1, continuation_ids=(5, 6)))
    assert key(one) != key(GenerationRequest(messages=PARTIAL, seed=1))  # text-level continuation


def _backend_on(device: str, prefill_dtype: str = "float32") -> LocalBackend:
    """A local backend's identity without loading a model (model_key reads only these)."""
    backend = LocalBackend.__new__(LocalBackend)
    backend.spec, backend.options = ModelSpec(), ModelSpec().options
    backend.dtype, backend.prefill_dtype, backend.device = "float32", prefill_dtype, torch.device(device)
    return backend


def test_the_device_is_part_of_the_model_key_off_the_cpu():
    assert _backend_on("cpu").model_key == MODEL  # unchanged: the replay files were drawn on a CPU
    assert _backend_on("mps").model_key == f"{MODEL}:device=mps"


def test_a_prefill_in_another_precision_is_part_of_the_model_key():
    backend = _backend_on("cpu", prefill_dtype="bfloat16")  # prompts' KV rounds as bfloat16 does
    assert backend.model_key == f"{MODEL}:prefill=bfloat16"


def test_hidden_states_are_never_stored(tmp_path: Path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    sample = Completion(text="5", completion_tokens=1, finish_reason="stop", hidden_states=((0.5, 0.25),))
    cache.store("k", 0, [sample], 3)
    [(stored, prompt_tokens)] = cache.lookup("k", 0, 1).values()
    assert stored.hidden_states is None and stored.text == "5" and prompt_tokens == 3
    raw = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT completion FROM samples").fetchone()[0]
    assert "hidden_states\":null" in raw.replace(" ", "")


# ----- a damaged file ----------------------------------------------------------------------


def _filled(path: Path, rows: int = 400) -> None:
    cache = GenerationCache(path)
    for i in range(rows):
        cache.store(f"key-{i}", 0, [Completion(text="x" * 300, completion_tokens=1, finish_reason="stop")], 1)
    cache.close()
    with sqlite3.connect(path) as db:  # everything into the main file, as after a clean exit
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size > 20 * 4096


def _commit_elsewhere(path: Path) -> None:
    """A commit by another connection: the cache's connection then reads the file anew."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 1")


def _overwrite(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * size)


def test_overwritten_interior_pages_are_named_on_open(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    _filled(path)
    _overwrite(path, 4096 * 3, 4096 * 4)
    with pytest.raises(CacheCorrupted, match=f"generation cache {path} is corrupted.*--cache-recover") as caught:
        GenerationCache(path)
    assert caught.value.path == path


def test_an_overwritten_header_is_named_not_a_traceback(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    _filled(path)
    _overwrite(path, 0, 100)
    with pytest.raises(CacheCorrupted, match="file is not a database"):
        GenerationCache(path)


def test_damage_met_after_opening_is_named_and_sticks(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    _filled(path)
    cache = GenerationCache(path)
    _overwrite(path, 4096 * 2, 4096 * 20)  # while open, as another process might
    _commit_elsewhere(path)
    with pytest.raises(CacheCorrupted, match=str(path)):
        cache.lookup("key-0", 0, 1)
    with pytest.raises(CacheCorrupted):  # every later use says so at once
        cache.count()


def test_move_aside_keeps_the_damaged_file_and_starts_afresh(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    _filled(path)
    _overwrite(path, 0, 100)
    damaged = path.read_bytes()
    cache = GenerationCache(path, on_corrupt="move-aside")
    assert cache.moved_to is not None and cache.moved_to.name.startswith("c.sqlite.corrupt-")
    assert cache.moved_to.read_bytes() == damaged
    assert cache.count() == 0
    cache.store("k", 0, [Completion(text="5", completion_tokens=1, finish_reason="stop")], 2)
    assert cache.lookup("k", 0, 1)[0][0].text == "5"


def test_move_aside_while_running(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    _filled(path)
    cache = GenerationCache(path, on_corrupt="move-aside")
    _overwrite(path, 4096 * 2, 4096 * 20)
    _commit_elsewhere(path)
    assert cache.lookup("key-0", 0, 1) == {}  # answered by the fresh cache
    assert cache.moved_to is not None and cache.moved_to.exists() and cache.count() == 0


def test_orchestra_run_names_a_damaged_cache_and_recovers_when_asked(tmp_path: Path, fake_backend):
    recipe = tmp_path / "vote.yaml"
    recipe.write_text(yaml.safe_dump(vote_recipe()))
    task = write_sums(tmp_path / "sums.jsonl", 2)
    path = tmp_path / "c.sqlite"
    _filled(path)
    _overwrite(path, 0, 100)

    def run(*extra: str):
        args = ["run", str(recipe), "--task", task, "--cache", str(path), "--out", str(tmp_path / "o"), *extra]
        return CliRunner().invoke(app, args)

    refused = run()
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert f"generation cache {path} is corrupted" in " ".join(refused.output.split())
    recovered = run("--cache-recover")
    assert recovered.exit_code == 0, recovered.output
    [aside] = tmp_path.glob("c.sqlite.corrupt-*")
    assert aside.stat().st_size > 0 and GenerationCache(path).count() == 2 * 4  # the run's samples, afresh


def test_serve_and_search_name_a_damaged_cache_in_one_line(tmp_path: Path, fake_backend):
    from search_fixtures import fake_space, write_split_sums

    path = tmp_path / "c.sqlite"
    _filled(path)
    _overwrite(path, 0, 100)
    recipe = tmp_path / "vote.yaml"
    recipe.write_text(yaml.safe_dump(vote_recipe()))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(fake_space()))
    task = write_split_sums(tmp_path / "s.jsonl", dev=4)
    served = CliRunner().invoke(app, ["serve", str(recipe), "--cache", str(path), "--port", "0"])
    searched = CliRunner().invoke(app, ["search", str(space), "--task", task, "--cache", str(path),
                                        "--out", str(tmp_path / "o")])
    for result in (served, searched):
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and "Traceback" not in said, said
        assert f"generation cache {path} is corrupted" in said
    assert not fake_backend.log.calls
