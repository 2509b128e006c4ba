"""Per-layer magnitude thresholds for TEAL-style activation sparsity.

TEAL's observation: the hidden states entering a Llama MLP are zero-centred and
bell-shaped, so zeroing the entries of smallest magnitude removes little signal,
and every zeroed entry is a weight column the matrix product need not read. A
threshold per layer and per input (the MLP input, which feeds gate and up, and
the down projection's input) turns a target sparsity into a cheap per-token
test `|x| > t`.

Thresholds are calibrated once per (model, dtype, sparsity) on the activations
of a few built-in conversations (`CALIBRATION_TEXTS`, run densely through the
model's own forward): `t` is the `sparsity` quantile of |x| over all calibration
tokens of that layer. They are stored as JSON in a folder the caller names (the
local backend's is `$ORCHESTRA_HOME/sparse/teal/`) and computed on first load
when missing (well under a second for the default model), so they are
reproducible and inspectable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

#: Conversations whose activations set the thresholds: arithmetic, reasoning, code, prose —
#: the kinds of text orchestra's recipes feed the model.
CALIBRATION_TEXTS: tuple[tuple[str, str], ...] = (
    ("What is 7 + 5? Answer with a number.", "7 + 5 = 12. The answer is 12."),
    (
        "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. "
        "How much change does he get?",
        "4 pens cost 4 * 3 = 12 dollars. The change is 20 - 12 = 8 dollars. The answer is 8.",
    ),
    (
        "Write a Python function that returns the largest element of a list.",
        "def largest(items):\n    best = items[0]\n    for item in items[1:]:\n        if item > best:\n"
        "            best = item\n    return best",
    ),
    (
        "Explain in two sentences why the sky is blue.",
        "Sunlight is scattered by the molecules of the air, and blue light, with its short "
        "wavelength, is scattered much more than red light. So blue light reaches our eyes from "
        "every direction of the sky.",
    ),
    (
        "Sort these numbers from smallest to largest: 9, 2, 14, 5.",
        "From smallest to largest: 2, 5, 9, 14.",
    ),
    (
        "If all cats are animals and some animals are black, must some cats be black?",
        "No. The statements allow every black animal to be something other than a cat, so it "
        "does not follow that any cat is black.",
    ),
    (
        "Compute 38 + 17 - 9 step by step.",
        "First 38 + 17 = 55. Then 55 - 9 = 46. The answer is 46.",
    ),
    (
        "Summarize: The meeting moved from Tuesday to Thursday because the room was booked.",
        "The meeting is now on Thursday, since the room was taken on Tuesday.",
    ),
)


@dataclass(frozen=True)
class TealThresholds:
    """Per-layer thresholds for one model at one target sparsity.

    `mlp_input[i]`: for layer i's normalised MLP input (what gate and up read);
    `down_input[i]`: for silu(gate) * up (what down reads). Entries with |x| <= t are zeroed.
    """

    sparsity: float
    mlp_input: tuple[float, ...]
    down_input: tuple[float, ...]

    def to_json(self) -> dict:
        return {"sparsity": self.sparsity, "mlp_input": list(self.mlp_input), "down_input": list(self.down_input)}

    @classmethod
    def from_json(cls, data: dict) -> TealThresholds:
        return cls(float(data["sparsity"]), tuple(data["mlp_input"]), tuple(data["down_input"]))


def calibration_token_ids(tokenizer, texts: Sequence[tuple[str, str]] = CALIBRATION_TEXTS) -> list[list[int]]:
    """Each conversation as the model sees it (chat template when the tokenizer has one)."""
    batches = []
    for question, answer in texts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
            )
        else:
            text = f"{question}\n{answer}"
        batches.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return batches


def collect_mlp_activations(model, token_batches: Sequence[Sequence[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Dense MLP inputs of every layer over all tokens: (mlp_input, down_input) lists of [tokens, width].

    Read with forward pre-hooks on each layer's gate and down projections while the
    model's own forward runs, so no engine code is involved.
    """
    layers = model.model.layers
    mlp_inputs: list[list[torch.Tensor]] = [[] for _ in layers]
    down_inputs: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.mlp.gate_proj.register_forward_pre_hook(
            lambda _m, args, i=index: mlp_inputs[i].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        ))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda _m, args, i=index: down_inputs[i].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        ))
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for ids in token_batches:
                model.model(torch.tensor([list(ids)], device=device), use_cache=False)  # no LM head: not needed
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(x) for x in mlp_inputs], [torch.cat(x) for x in down_inputs]


def magnitude_threshold(values: torch.Tensor, sparsity: float) -> float:
    """The value t with a `sparsity` share of |values| at or below it (0 at sparsity 0)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = values.abs().reshape(-1)
    k = int(round(sparsity * flat.numel()))
    if k == 0:
        return 0.0
    return float(flat.kthvalue(k).values)


def calibrate_teal(model, token_batches: Sequence[Sequence[int]], sparsity: float) -> TealThresholds:
    """Thresholds that zero a `sparsity` share of each layer's MLP inputs on these tokens."""
    return thresholds_for(*collect_mlp_activations(model, token_batches), sparsity)


def thresholds_for(mlp_inputs: Sequence[torch.Tensor], down_inputs: Sequence[torch.Tensor], sparsity: float) -> TealThresholds:
    """Thresholds from collected activations (see `collect_mlp_activations`)."""
    return TealThresholds(
        sparsity=sparsity,
        mlp_input=tuple(magnitude_threshold(x, sparsity) for x in mlp_inputs),
        down_input=tuple(magnitude_threshold(x, sparsity) for x in down_inputs),
    )


def thresholds_path(
    folder: Path, model_name: str, dtype: torch.dtype, sparsity: float, texts=CALIBRATION_TEXTS
) -> Path:
    """Where in `folder` the thresholds for this model, dtype, sparsity and calibration set are stored."""
    digest = hashlib.sha256(json.dumps([model_name, str(dtype), texts]).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_")[-60:]
    return folder / f"{slug}-{str(dtype).removeprefix('torch.')}-s{sparsity:.3f}-{digest}.json"


def load_or_calibrate(model, tokenizer, model_name: str, sparsity: float, folder: Path) -> TealThresholds:
    """Thresholds for (model, dtype, sparsity) stored in `folder`, calibrating and storing them if absent."""
    dtype = next(model.parameters()).dtype
    path = thresholds_path(folder, model_name, dtype, sparsity)
    if path.exists():
        try:
            stored = TealThresholds.from_json(json.loads(path.read_text()))
            if len(stored.mlp_input) == len(model.model.layers):
                return stored
        except (ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged file is recomputed below
    thresholds = calibrate_teal(model, calibration_token_ids(tokenizer), sparsity)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"model": model_name, "dtype": str(dtype), **thresholds.to_json()}))
    temporary.replace(path)
    return thresholds
