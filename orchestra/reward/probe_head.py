"""The trained probe: a small head on a model's hidden states, and the file it lives in.

A probe is a linear layer or a one-hidden-layer MLP over standardized hidden
states, trained with BCE on soft labels (the fraction of sampled continuations
that reached a correct answer) and read through a sigmoid as P(this partial
answer ends correct). The feature mean and standard deviation are part of the
head, so a loaded probe needs nothing but its file.

The file is one safetensors file: the weights as tensors, and in its header the
`ProbeMetadata` as JSON (which model, hidden size, step delimiter, how it was
trained and its held-out AUC), so a recipe cannot apply it to the wrong model
without being told. A `.json` copy of the metadata is written beside it for people.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, safe_open, save_file

HeadKind = Literal["linear", "mlp"]
Meta = TypeVar("Meta", bound=BaseModel)
#: Key of the metadata JSON in the safetensors header.
METADATA_KEY = "orchestra_probe"
#: Width of the MLP head's hidden layer: small, the labelled set is a few thousand steps.
MLP_WIDTH = 64


class ProbeMetadata(BaseModel):
    """Everything needed to use a probe correctly and to judge it, stored in its file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The backend's name for the model whose states were read, e.g. `local:smollm2-135m-instruct`.
    model: str
    hidden_size: int
    head: HeadKind
    #: Steps were cut at this delimiter when labelling; search should step at the same one.
    delimiter: str
    task: str
    problems_train: int
    problems_heldout: int
    steps_train: int
    steps_heldout: int
    #: Mean soft label over all labelled steps (how often a step's continuations were right).
    mean_label: float
    #: Share of steps with at least one correct continuation: the positive class of the AUCs.
    positive_share: float
    #: AUC of the probe on held-out problems' steps (None where a class was missing).
    heldout_auc: float | None
    #: AUC of the generator's mean token log-probability on the same steps (the baseline).
    heldout_logprob_auc: float | None
    rollouts: int
    continuations: int
    temperature: float
    seed: int
    epochs: int
    #: Tokens the labelling spent (prompt + completion, as orchestra meters them).
    tokens: int


class ProbeHead(torch.nn.Module):
    """Standardize, then a linear layer or a small MLP, to one logit."""

    def __init__(self, hidden_size: int, kind: HeadKind = "linear"):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        if kind == "linear":
            self.layers = torch.nn.Sequential(torch.nn.Linear(hidden_size, 1))
        elif kind == "mlp":
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(hidden_size, MLP_WIDTH), torch.nn.GELU(), torch.nn.Linear(MLP_WIDTH, 1)
            )
        else:
            raise ValueError(f"unknown probe head {kind!r}; expected linear or mlp")

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Logits [n] for states [n, hidden]."""
        return self.layers((states - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, states: Sequence[Sequence[float]]) -> list[float]:
        """P(correct) per state, as plain floats."""
        x = torch.tensor([list(s) for s in states], dtype=torch.float32)
        return torch.sigmoid(self(x)).tolist()


def train_head(
    states: Sequence[Sequence[float]],
    labels: Sequence[float],
    *,
    kind: HeadKind = "linear",
    epochs: int = 300,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-2,
    seed: int = 0,
) -> ProbeHead:
    """Fit a head with full-batch AdamW on BCE against soft labels in [0, 1].

    Full batch because the set is small (thousands of steps); weight decay, not early
    stopping on held-out data, keeps it from memorising, so the held-out AUC stays honest.
    """
    if not states:
        raise ValueError("no labelled steps to train on")
    if len(states) != len(labels):
        raise ValueError(f"{len(states)} states but {len(labels)} labels")
    torch.manual_seed(seed)
    x = torch.tensor([list(s) for s in states], dtype=torch.float32)
    y = torch.tensor(list(labels), dtype=torch.float32)
    head = ProbeHead(x.shape[1], kind)
    head.mean.copy_(x.mean(0))
    head.std.copy_(x.std(0, unbiased=False).clamp_min(1e-4))
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    head.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(head(x), y)
        loss.backward()
        optimizer.step()
    head.eval()
    return head


def write_head_file(path: str | Path, head: ProbeHead, metadata: BaseModel, key: str) -> None:
    """Write a head's weights with `metadata` as JSON under `key` in the header, and a readable `.json` beside it.

    Probes and outcome verifiers share this format; the key tells them apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous() for name, tensor in head.state_dict().items()}
    save_file(tensors, str(path), metadata={key: metadata.model_dump_json()})
    path.with_suffix(".json").write_text(json.dumps(metadata.model_dump(), indent=2) + "\n")


def read_head_metadata(path: str | Path, key: str, metadata_type: type[Meta], what: str, trainer: str) -> Meta:
    """The metadata under `key` in a head file's header, without loading its weights.

    `what` names the kind of file in errors ("probe"), `trainer` the command that writes one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist; train one with `{trainer}`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"{path} is not a safetensors file: {error}") from None
    if key not in header:
        raise ValueError(f"{path} is a safetensors file but not an orchestra {what} (no {key!r} metadata)")
    return metadata_type.model_validate_json(header[key])


def save_probe(path: str | Path, head: ProbeHead, metadata: ProbeMetadata) -> None:
    """Write the probe (weights + metadata in the header) and a readable `.json` beside it."""
    if metadata.head != head.kind:
        raise ValueError(f"metadata says head {metadata.head!r} but the head is {head.kind!r}")
    write_head_file(path, head, metadata, METADATA_KEY)


def read_metadata(path: str | Path) -> ProbeMetadata:
    """The metadata stored in a probe file's header, without loading its weights."""
    return read_head_metadata(path, METADATA_KEY, ProbeMetadata, "probe", "orchestra reward train")


def load_probe(path: str | Path) -> tuple[ProbeHead, ProbeMetadata]:
    """The head and metadata saved by `save_probe`."""
    metadata = read_metadata(path)
    head = ProbeHead(metadata.hidden_size, metadata.head)
    head.load_state_dict(load_file(str(path)))
    head.eval()
    return head, metadata
