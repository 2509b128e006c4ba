"""Training the probe process reward model from automatically labelled rollouts.

No human labels: a step is labelled by what the generator itself does from it.
For each training problem, `rollouts` full solutions are sampled and cut into
steps at `delimiter`. For every step prefix, `continuations` completions are
sampled from the prefix (the prefix is an assistant turn the model continues, so
the engine's prefix cache reuses its KV) and judged exactly with the task's
scorer (right iff the score is at least 1: partial credit is wrong); the
prefix's soft label is the share of those completions and of the rollout itself
(also a sample from that prefix) that are right. A complete rollout's last
prefix is the rollout, labelled 1 or 0 by itself. The hidden state at each prefix's last token
is the probe's input (`orchestra.reward.probe_features`).

Problems, not steps, are split into train and held-out sets: steps of one
problem are strongly correlated, and a step-level split would report an AUC that
partly measures memorised problems.

Every model call goes through a `ModelHandle`, so the generation cache replays
earlier samples (a rerun with more epochs or another head costs no generation)
and tokens are metered as in a recipe run.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from orchestra.backends import GenerationRequest
from orchestra.context import ModelHandle
from orchestra.metrics import is_correct
from orchestra.reward.probe_features import continuation_messages, prefix_hidden_states
from orchestra.reward.probe_head import HeadKind, ProbeHead, ProbeMetadata, train_head
from orchestra.problem import Problem
from orchestra.reward.process_reward import split_steps
from orchestra.reward.roc_auc import roc_auc
from orchestra.tasks import Task


class LabellingSettings(BaseModel):
    """How rollouts are sampled and steps labelled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollouts: int = Field(default=4, ge=1, description="Full solutions sampled per problem.")
    continuations: int = Field(default=4, ge=1, description="Completions sampled from each step prefix.")
    delimiter: str = Field(default="\n\n", min_length=1, description="Where solutions are cut into steps.")
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=256, ge=1, description="Length limit of a whole solution, prefix included.")
    max_steps: int = Field(default=8, ge=1, description="Prefixes labelled per rollout (the first ones).")
    seed: int = 0


@dataclass(frozen=True)
class LabelledStep:
    """One step prefix with its label and the features the probe and the baseline read."""

    problem_id: str
    rollout: int
    #: 1-based: the prefix ends after this step.
    step: int
    prefix: str
    #: Share of the samples drawn from this prefix (the rollout and the continuations) exactly right.
    label: float
    samples: int
    #: Generator's final-layer hidden state at the prefix's last token.
    state: tuple[float, ...]
    #: The generator's mean token log-probability over the prefix (the baseline's score).
    mean_logprob: float | None

    @property
    def positive(self) -> bool:
        """At least one sample from this prefix was exactly right: the class the AUCs rank."""
        return self.label > 0


def _seed(*parts: object) -> int:
    """A stable 31-bit seed from parts (hashlib: Python's hash() changes per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _correct(task: Task, problem: Problem, text: str) -> float:
    """1.0 for an exactly right solution, else 0.0 (partial credit included)."""
    return float(is_correct(task.score(problem, text, task.extract_answer(text))))


def _mean_logprob(handle: ModelHandle, logprobs: Sequence[float] | None, prefix: str) -> float | None:
    """Mean log-probability of the rollout's tokens up to the end of `prefix`.

    The prefix's length in tokens is counted by re-tokenizing it through the backend
    protocol; it can differ from the sampled tokens by a token at the boundary,
    which barely moves a mean.
    """
    if not logprobs:
        return None
    count = handle.backend.count_prompt_tokens(GenerationRequest(prompt=prefix))
    head = logprobs[: max(1, min(count, len(logprobs)))]
    return sum(head) / len(head)


async def label_problem(
    handle: ModelHandle, task: Task, problem: Problem, settings: LabellingSettings
) -> list[LabelledStep]:
    """Roll out, cut into steps, sample continuations from every prefix, label, read states."""
    rollout_result = await handle.generate(
        GenerationRequest(
            messages=problem.messages,
            n=settings.rollouts,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=_seed(settings.seed, problem.id, "rollouts"),
            logprobs=True,
        )
    )
    plans: list[tuple[int, int, str, object]] = []  # rollout, step, prefix, continuation call (None: none)
    for r, completion in enumerate(rollout_result.completions):
        text = completion.text
        steps = split_steps(text, settings.delimiter)
        prefix = ""
        for j, step in enumerate(steps[: settings.max_steps], start=1):
            prefix += step.text
            call = None
            if prefix != text:  # the whole rollout is its own (only) sample
                used = handle.backend.count_prompt_tokens(GenerationRequest(prompt=prefix))
                call = handle.generate(
                    GenerationRequest(
                        messages=continuation_messages(problem.messages, prefix),
                        n=settings.continuations,
                        temperature=settings.temperature,
                        max_tokens=max(16, settings.max_tokens - used),
                        seed=_seed(settings.seed, problem.id, r, j),
                    )
                )
            plans.append((r, j, prefix, call))
    calls = [call for *_, call in plans if call is not None]
    prefixes = [prefix for _, _, prefix, _ in plans]
    continued, states = await asyncio.gather(
        asyncio.gather(*calls), prefix_hidden_states(handle, problem.messages, prefixes)
    )
    results = iter(continued)
    # Each prefix's samples as whole solutions: the rollout itself, then the continuations.
    solutions = [
        [rollout_result.completions[r].text]
        + ([prefix + c.text for c in next(results).completions] if call is not None else [])
        for r, _, prefix, call in plans
    ]
    # Each distinct text scored once (a rollout is a sample of all its prefixes), off the event
    # loop: a task's scorer may run code (HumanEval) while other problems generate.
    distinct = list(dict.fromkeys(text for texts in solutions for text in texts))
    right_of = dict(zip(distinct, await asyncio.to_thread(lambda: [_correct(task, problem, t) for t in distinct])))
    labelled = []
    for (r, j, prefix, _), state, texts in zip(plans, states, solutions):
        right = [right_of[text] for text in texts]
        labelled.append(
            LabelledStep(
                problem_id=problem.id,
                rollout=r,
                step=j,
                prefix=prefix,
                label=sum(right) / len(right),
                samples=len(right),
                state=tuple(state),
                mean_logprob=_mean_logprob(handle, rollout_result.completions[r].logprobs, prefix),
            )
        )
    return labelled


async def label_problems(
    handle: ModelHandle,
    task: Task,
    problems: Sequence[Problem],
    settings: LabellingSettings,
    *,
    concurrency: int = 8,
    on_problem: Callable[[Problem, list[LabelledStep]], None] | None = None,
) -> list[LabelledStep]:
    """Label many problems, `concurrency` at a time so the backend batches their calls.

    Steps come back in the problems' order, whatever order they finish in.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Problem) -> list[LabelledStep]:
        async with gate:
            steps = await label_problem(handle, task, problem, settings)
        if on_problem is not None:
            on_problem(problem, steps)
        return steps

    per_problem = await asyncio.gather(*(one(p) for p in problems))
    return [step for steps in per_problem for step in steps]


def split_problems(problem_ids: Sequence[str], heldout_share: float, seed: int) -> set[str]:
    """The held-out problem ids: a seeded shuffle, at least one problem each side when possible."""
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout share must be in (0, 1), got {heldout_share}")
    ids = sorted(set(problem_ids))
    random.Random(seed).shuffle(ids)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 problems to hold some out, got {len(ids)}")
    count = min(len(ids) - 1, max(1, round(heldout_share * len(ids))))
    return set(ids[:count])


@dataclass(frozen=True)
class FitResult:
    head: ProbeHead
    heldout_ids: frozenset[str]
    train_steps: int
    heldout_steps: int
    #: Held-out AUCs of the probe and of the mean log-prob baseline (None: one class missing).
    heldout_auc: float | None
    heldout_logprob_auc: float | None


def _auc_or_none(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    try:
        return roc_auc(scores, positives)
    except ValueError:
        return None


def fit_probe(
    steps: Sequence[LabelledStep],
    *,
    kind: HeadKind = "linear",
    epochs: int = 300,
    heldout_share: float = 0.25,
    seed: int = 0,
) -> FitResult:
    """Train on the training problems' steps, report AUCs on the held-out problems' steps."""
    heldout_ids = split_problems([s.problem_id for s in steps], heldout_share, seed)
    train = [s for s in steps if s.problem_id not in heldout_ids]
    heldout = [s for s in steps if s.problem_id in heldout_ids]
    head = train_head([s.state for s in train], [s.label for s in train], kind=kind, epochs=epochs, seed=seed)
    positives = [s.positive for s in heldout]
    probe_auc = _auc_or_none(head.probabilities([s.state for s in heldout]), positives) if heldout else None
    with_logprob = [s for s in heldout if s.mean_logprob is not None]
    baseline_auc = (
        _auc_or_none([s.mean_logprob for s in with_logprob], [s.positive for s in with_logprob])  # type: ignore[misc]
        if with_logprob
        else None
    )
    return FitResult(head, frozenset(heldout_ids), len(train), len(heldout), probe_auc, baseline_auc)


def probe_metadata(
    fit: FitResult,
    steps: Sequence[LabelledStep],
    settings: LabellingSettings,
    *,
    model: str,
    task: str,
    epochs: int,
    tokens: int,
) -> ProbeMetadata:
    """What the probe file records about how it was made and how good it is."""
    problems = {s.problem_id for s in steps}
    return ProbeMetadata(
        model=model,
        hidden_size=len(steps[0].state),
        head=fit.head.kind,  # type: ignore[arg-type]
        delimiter=settings.delimiter,
        task=task,
        problems_train=len(problems - fit.heldout_ids),
        problems_heldout=len(problems & fit.heldout_ids),
        steps_train=fit.train_steps,
        steps_heldout=fit.heldout_steps,
        mean_label=statistics.fmean(s.label for s in steps),
        positive_share=sum(s.positive for s in steps) / len(steps),
        heldout_auc=fit.heldout_auc,
        heldout_logprob_auc=fit.heldout_logprob_auc,
        rollouts=settings.rollouts,
        continuations=settings.continuations,
        temperature=settings.temperature,
        seed=settings.seed,
        epochs=epochs,
        tokens=tokens,
    )
