"""The trained outcome verifier (ORM): P(this final answer is exactly right), and the file it lives in.

A small head (`orchestra.reward.probe_head.ProbeHead`: standardize, then linear
or a one-hidden-layer MLP, sigmoid) over the features of
`orchestra.reward.outcome_features` — signals the generator already produced
while sampling, read within the candidate's pool. It is trained with BCE on
exact 0/1 labels (the task's scorer, score >= 1), so its output is a
probability, not only a ranking.

The file is one safetensors file: the weights, and in the header the
`OutcomeRewardMetadata` (which model and sampling settings produced the
training pools, the feature names, held-out AUCs over several problem splits
against the vote-share and mean log-prob baselines). The verifier refuses
another model's candidates, and a file whose features differ from this
version's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.reward.outcome_features import FEATURES, pool_features
from orchestra.reward.probe_head import HeadKind, ProbeHead, read_head_metadata, write_head_file

#: Key of the metadata JSON in the safetensors header.
METADATA_KEY = "orchestra_outcome_reward"


class SplitAUC(BaseModel):
    """Held-out AUCs over several problem splits: their mean and each split's value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float | None
    splits: tuple[float | None, ...]


class OutcomeRewardMetadata(BaseModel):
    """How a verifier was made and how good it is, stored in its file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The backend's name for the generator whose answers were labelled.
    model: str
    task: str
    features: tuple[str, ...]
    head: HeadKind
    #: Pools the training answers were drawn in: a verifier reads vote shares, so it is
    #: best used on pools drawn the same way.
    samples_per_problem: int
    temperature: float
    max_tokens: int
    problems: int
    answers: int
    #: Share of the training answers that are exactly right.
    positive_share: float
    heldout_share: float
    #: Held-out AUCs over problem splits, of the verifier and of the two baselines it must beat.
    auc: SplitAUC
    auc_vote_share: SplitAUC
    auc_mean_logprob: SplitAUC
    epochs: int
    seed: int
    tokens: int = Field(description="Tokens spent sampling the training pools (prompt + completion).")


class OutcomeReward:
    """A loaded verifier: scores every candidate of a pool."""

    def __init__(self, head: ProbeHead, metadata: OutcomeRewardMetadata):
        if tuple(metadata.features) != FEATURES:
            raise ValueError(
                f"verifier reads features {list(metadata.features)}, but this version of orchestra computes "
                f"{list(FEATURES)}; retrain it with `orchestra reward train --outcome`"
            )
        self.head = head
        self.metadata = metadata

    def score(self, pool: Sequence[Candidate]) -> list[float]:
        """P(exactly right) for each candidate, each read against the whole pool."""
        if not pool:
            return []
        return self.head.probabilities(pool_features(pool))

    def save(self, path: str | Path) -> None:
        """Write the verifier and a readable `.json` of its metadata beside it."""
        write_head_file(path, self.head, self.metadata, METADATA_KEY)

    @classmethod
    def load(cls, path: str | Path) -> OutcomeReward:
        from safetensors.torch import load_file

        metadata = read_metadata(path)
        head = ProbeHead(len(metadata.features), metadata.head)
        head.load_state_dict(load_file(str(path)))
        head.eval()
        return cls(head, metadata)


def read_metadata(path: str | Path) -> OutcomeRewardMetadata:
    """The metadata in a verifier file's header, without loading its weights."""
    return read_head_metadata(
        path, METADATA_KEY, OutcomeRewardMetadata, "outcome verifier", "orchestra reward train --outcome"
    )
