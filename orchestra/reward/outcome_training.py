"""Training the outcome verifier: sample pools on the train split, label them exactly, fit, cross-check.

For each training problem a pool of answers is drawn exactly as a recipe's
`sample` node named `samples` would draw it (same request, same per-problem
seed), so the generation cache serves the training pools and recipe runs
alike, and the verifier sees pools like the ones it will score. Each answer is
labelled 1 when the task's scorer gives it full credit (score >= 1), else 0:
partial credit is not "right".

How good the verifier is gets measured on problems it never saw: the
problems are split into train and held-out sets several times (answers of
one problem are strongly correlated, so splitting answers would report an AUC
that partly measures memorised problems). The AUC of each split is reported
beside those of two baselines, the answer's vote share and the mean token
log-probability. The head that is saved is then fitted on every problem.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from orchestra.backends import GenerationRequest
from orchestra.candidate import Candidate
from orchestra.context import ModelHandle
from orchestra.executor import node_seed
from orchestra.problem import Problem
from orchestra.reward.outcome_features import FEATURES, pool_features
from orchestra.reward.outcome_reward import OutcomeReward, OutcomeRewardMetadata, SplitAUC
from orchestra.reward.probe_head import HeadKind, train_head
from orchestra.reward.roc_auc import roc_auc
from orchestra.tasks import Task

#: The node id whose draws the training pools reproduce (see the module docstring).
POOL_NODE = "samples"


class PoolSettings(BaseModel):
    """How the training pools are drawn: match them to the recipes the verifier will serve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(default=16, ge=2, description="Answers per problem.")
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=128, ge=1)
    seed: int = Field(default=0, description="The recipe seed whose `samples` node the pools reproduce.")


@dataclass(frozen=True)
class LabelledPool:
    """One problem's pool of answers, each labelled exactly right (1) or not (0)."""

    problem_id: str
    candidates: tuple[Candidate, ...]
    labels: tuple[float, ...]

    @functools.cached_property
    def features(self) -> list[list[float]]:
        """Computed once: every problem split of the cross-check and the final fit read them."""
        return pool_features(self.candidates)


def pool_request(problem: Problem, settings: PoolSettings) -> GenerationRequest:
    return GenerationRequest(
        messages=problem.messages,
        n=settings.samples,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=node_seed(settings.seed, problem.id, POOL_NODE),
        logprobs=True,
    )


async def label_pool(handle: ModelHandle, task: Task, problem: Problem, settings: PoolSettings) -> LabelledPool:
    """Draw one problem's pool and label every answer with the task's scorer."""
    result = await handle.generate(pool_request(problem, settings))
    candidates = []
    for completion in result.completions:
        candidates.append(
            Candidate(
                text=completion.text,
                model=handle.alias,
                answer=task.extract_answer(completion.text),
                completion_tokens=completion.completion_tokens,
                finish_reason=completion.finish_reason,
                logprobs=completion.logprobs,
            )
        )

    def score() -> tuple[float, ...]:
        return tuple(float(task.score(problem, c.text, c.answer) >= 1.0) for c in candidates)

    labels = await asyncio.to_thread(score)  # a scorer may run code; other problems keep generating
    return LabelledPool(problem.id, tuple(candidates), labels)


async def label_pools(
    handle: ModelHandle,
    task: Task,
    problems: Sequence[Problem],
    settings: PoolSettings,
    *,
    concurrency: int = 16,
    on_pool: Callable[[LabelledPool], None] | None = None,
) -> list[LabelledPool]:
    """Label many problems, `concurrency` at a time so the backend batches them; pools in problem order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Problem) -> LabelledPool:
        async with gate:
            pool = await label_pool(handle, task, problem, settings)
        if on_pool is not None:
            on_pool(pool)
        return pool

    return list(await asyncio.gather(*(one(p) for p in problems)))


def _auc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    try:
        return roc_auc(scores, [label > 0 for label in labels])
    except ValueError:  # one class only
        return None


def _split_auc(values: list[float | None]) -> SplitAUC:
    known = [v for v in values if v is not None]
    return SplitAUC(mean=statistics.fmean(known) if known else None, splits=tuple(values))


@dataclass(frozen=True)
class CrossCheck:
    """Held-out AUCs per split: the verifier's and the two baselines'."""

    verifier: SplitAUC
    vote_share: SplitAUC
    mean_logprob: SplitAUC


def _rows(pools: Sequence[LabelledPool]) -> tuple[list[list[float]], list[float]]:
    features, labels = [], []
    for pool in pools:
        features.extend(pool.features)
        labels.extend(pool.labels)
    return features, labels


def cross_check(
    pools: Sequence[LabelledPool],
    *,
    kind: HeadKind,
    epochs: int,
    splits: int = 5,
    heldout_share: float = 0.2,
    seed: int = 0,
) -> CrossCheck:
    """Fit on the train problems of each of `splits` seeded problem splits; AUCs on the held-out ones."""
    if len(pools) < 2:
        raise ValueError(f"need at least 2 problems to hold some out, got {len(pools)}")
    ours, votes, logprobs = [], [], []
    vote_column, logprob_column = FEATURES.index("vote_share"), FEATURES.index("mean_logprob")
    for split in range(splits):
        order = list(pools)
        random.Random(seed * 1000 + split).shuffle(order)
        count = min(len(order) - 1, max(1, round(heldout_share * len(order))))
        heldout, train = order[:count], order[count:]
        x, y = _rows(train)
        head = train_head(x, y, kind=kind, epochs=epochs, seed=seed + split)
        hx, hy = _rows(heldout)
        ours.append(_auc(head.probabilities(hx), hy))
        votes.append(_auc([row[vote_column] for row in hx], hy))
        logprobs.append(_auc([row[logprob_column] for row in hx], hy))
    return CrossCheck(_split_auc(ours), _split_auc(votes), _split_auc(logprobs))


def fit_outcome_reward(
    pools: Sequence[LabelledPool],
    settings: PoolSettings,
    *,
    model: str,
    task: str,
    kind: HeadKind = "mlp",
    epochs: int = 400,
    splits: int = 5,
    heldout_share: float = 0.2,
    tokens: int = 0,
) -> OutcomeReward:
    """Cross-check on `splits` problem splits, then fit the head on every problem and describe it."""
    check = cross_check(pools, kind=kind, epochs=epochs, splits=splits, heldout_share=heldout_share, seed=settings.seed)
    x, y = _rows(pools)
    head = train_head(x, y, kind=kind, epochs=epochs, seed=settings.seed)
    metadata = OutcomeRewardMetadata(
        model=model,
        task=task,
        features=FEATURES,
        head=kind,
        samples_per_problem=settings.samples,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        problems=len(pools),
        answers=len(y),
        positive_share=sum(y) / len(y) if y else 0.0,
        heldout_share=heldout_share,
        auc=check.verifier,
        auc_vote_share=check.vote_share,
        auc_mean_logprob=check.mean_logprob,
        epochs=epochs,
        seed=settings.seed,
        tokens=tokens,
    )
    return OutcomeReward(head, metadata)
