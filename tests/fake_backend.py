"""A scripted, deterministic backend for fast tests: no model, no torch.

Completions are a pure function of (rendered prompt, seed, sample index), so the
generation cache, resuming and per-index seeding can be checked exactly. For a
prompt holding a sum such as "Compute 3 + 4 =", sample `k` answers
`correct + OFFSETS[k % 8]`: with n=4 the answers are c+1, c, c+2, c, so the
majority (c) is not the first sample, and majority vote has work to do.

A test can script replies instead: `FakeBackend.script(request, prompt, index)`
returning a string makes that the completion (whitespace-separated words count
as tokens), and `FakeBackend.next_token(prompt)` returning a token -> logprob map
makes that the distribution reported by `top_logprobs` at the first generated
position (and its most likely token the reply), which is how verdict
probabilities are scripted. Stop strings cut a reply as a real backend would.
`FakeBackend.token_confidence(prompt, index, position)` scripts each position's
confidence: `top_logprobs` then lists the word with log-probability minus it, and
a request's `confidence_stop` ends the reply where a real engine would (finish
reason "confidence"); patch CONFIDENCE_STOP into `capabilities` to declare it.

Every call is logged on the class (`FakeBackend.log`), shared by all instances,
so a test can count backend calls across the models of a recipe. Use the
`fake_backend` fixture (import it into a test module) to register the backend
under the name "fake", reset the log and clear the engine's backend cache.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestra.backends import (
    BACKENDS,
    Backend,
    BackendInfo,
    Completion,
    ConfidenceStop,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    Prompt,
)
from orchestra.usage import Usage

PARAMETERS = 1000
#: Offset from the correct answer of sample k: OFFSETS[k % 8].
OFFSETS = (1, 0, 2, 0, 0, 3, 0, 1)
#: A prompt containing this word makes `generate` raise.
TRIGGER = "EXPLODE"
_SUM = re.compile(r"(-?\d+(?:\s*[-+]\s*\d+)+)\s*=")


def correct_answer(prompt: str) -> int | None:
    """The value of the first `a + b - c =` expression in the prompt, if any."""
    match = _SUM.search(prompt)
    if match is None:
        return None
    tokens = re.findall(r"-?\d+|[-+]", match.group(1).replace(" ", ""))
    total, sign = int(tokens[0]), 1
    for token in tokens[1:]:
        if token in "+-":
            sign = 1 if token == "+" else -1
        else:
            total += sign * int(token)
    return total


def sample_words(prompt: str, seed: int | None, index: int) -> list[str]:
    """The full (untruncated) completion of sample `index`, as whitespace tokens."""
    correct = correct_answer(prompt)
    offset = OFFSETS[index % len(OFFSETS)]
    answer = str(correct + offset) if correct is not None else f"idk{offset}"
    filler = ["hmm"] * (index % 3)
    return ["Let", "me", "add", "the", "numbers", "step", "by", "step.", f"(seed={seed}/sample={index})", *filler, "Answer:", answer]


def sample_tokens(prompt: str, seed: int | None, index: int) -> int:
    return len(sample_words(prompt, seed, index))


@dataclass
class Call:
    """One `generate` call as the backend saw it."""

    model: str
    prompt: str
    n: int
    first_index: int
    max_tokens: int
    seed: int | None
    temperature: float
    logprobs: bool
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()
    confidence_stop: ConfidenceStop | None = None


@dataclass
class FakeLog:
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    instances: int = 0


async def _held(request: GenerationRequest, prompt: str) -> None:
    """Wait while `FakeBackend.hold` says so; the bound only ends a test that never lets go."""
    for _ in range(120_000):
        if FakeBackend.hold is None or not FakeBackend.hold(request, prompt):
            return
        await asyncio.sleep(0.001)
    raise RuntimeError("fake backend: a call was held for two minutes")


class FakeBackend(Backend):
    """Scripted backend; class attributes let a test steer it (reset by the fixture)."""

    capabilities = frozenset({"logprobs", "continuation"})

    log: FakeLog = FakeLog()
    #: Seconds each call sleeps, or a function of (request, rendered prompt) giving them.
    delay: float | Callable[[GenerationRequest, str], float] = 0.0
    #: While this returns True for (request, rendered prompt), the call waits (polled every ms):
    #: an order or an overlap that a test needs is waited for, not hoped for with a delay.
    hold: Callable[[GenerationRequest, str], bool] | None = None
    #: Extra failure rule: a call for which this returns True raises RuntimeError.
    fail_when: Callable[[GenerationRequest, str], bool] | None = None
    #: Scripted reply text for (request, rendered prompt, sample index); None: the default reply.
    script: Callable[[GenerationRequest, str, int], str | None] | None = None
    #: Scripted next-token distribution (token -> logprob) at the first position; None: default.
    next_token: Callable[[str], dict[str, float] | None] | None = None
    #: Scripted confidence at (rendered prompt, sample index, position); None: 0.1 everywhere.
    token_confidence: Callable[[str, int, int], float] | None = None

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.busy_seconds = 0.0
        self.closed = False
        FakeBackend.log.instances += 1

    @classmethod
    def reset(cls) -> None:
        cls.log = FakeLog()
        cls.delay = 0.0
        cls.hold = None
        cls.fail_when = None
        cls.script = None
        cls.next_token = None
        cls.token_confidence = None

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(name=f"fake:{self.spec.model}", parameters=PARAMETERS, context_length=4096)

    def render(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        return "\n".join(f"{m.role}: {m.content}" for m in request.messages or ())

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, request: GenerationRequest, prepared: Prompt) -> GenerationResult:
        prompt = prepared.text
        log = FakeBackend.log
        log.calls.append(
            Call(
                model=self.spec.model,
                prompt=prompt,
                n=request.n,
                first_index=request.first_index,
                max_tokens=request.max_tokens,
                seed=request.seed,
                temperature=request.temperature,
                logprobs=request.logprobs,
                top_logprobs=request.top_logprobs,
                stop=request.stop,
                confidence_stop=request.confidence_stop,
            )
        )
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            await _held(request, prompt)
            delay = FakeBackend.delay(request, prompt) if callable(FakeBackend.delay) else FakeBackend.delay
            await asyncio.sleep(delay)
            self.busy_seconds += delay
            if TRIGGER in prompt:
                raise RuntimeError(f"fake backend failure: prompt contains {TRIGGER}")
            if FakeBackend.fail_when is not None and FakeBackend.fail_when(request, prompt):
                raise RuntimeError("fake backend failure: fail_when matched")
            completions = [
                self._completion(request, prompt, request.first_index + i) for i in range(request.n)
            ]
        finally:
            log.in_flight -= 1
        prompt_tokens = prepared.tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        usage = Usage(
            calls=1,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=prompt_tokens * (request.n - 1),
            completion_tokens=completion_tokens,
            flops=2.0 * PARAMETERS * (prompt_tokens + completion_tokens),
            seconds=delay,
        )
        return GenerationResult(completions=tuple(completions), prompt_tokens=prompt_tokens, usage=usage)

    def _completion(self, request: GenerationRequest, prompt: str, index: int) -> Completion:
        scripted = FakeBackend.script(request, prompt, index) if FakeBackend.script else None
        words = scripted.split() if scripted is not None else sample_words(prompt, request.seed, index)
        first = FakeBackend.next_token(prompt) if FakeBackend.next_token else None
        if first:
            words = [max(first, key=first.__getitem__).strip(), *words[1:]]
        cut = words[: request.max_tokens]
        finish = "length" if len(cut) < len(words) else "stop"
        text = " ".join(cut)
        stops = sorted((text.find(s), s) for s in request.stop if s in text)
        stopped_by = None
        if stops:  # like a real backend: the text ends before the first stop string
            text, finish, stopped_by = text[: stops[0][0]], "stop", stops[0][1]
            cut = text.split()
        scripted_confidence = FakeBackend.token_confidence
        confidences = [scripted_confidence(prompt, index, j) if scripted_confidence else 0.1 for j in range(len(cut))]
        rule = request.confidence_stop
        if rule is not None:  # like the engine: the first full window whose mean is below the threshold ends it
            low = next((j for j in range(rule.window, len(cut)) if
                        sum(confidences[j - rule.window:j]) / rule.window < rule.threshold), None)
            if low is not None:
                cut, finish, stopped_by = cut[:low], "confidence", None
                text = " ".join(cut)
        return Completion(
            text=text,
            completion_tokens=max(len(cut), 1),
            finish_reason=finish,
            logprobs=tuple(-0.1 * (1 + (index + j) % 5) for j in range(len(cut))) if request.logprobs else None,
            top_logprobs=tuple(
                dict(first) if j == 0 and first else {word: -confidences[j]} for j, word in enumerate(cut)
            )
            if request.top_logprobs
            else None,
            stopped_by=stopped_by,
        )

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def fake_backend(monkeypatch, tmp_path):
    """Register FakeBackend as "fake", with a fresh log, no cached backend instances,
    and $ORCHESTRA_HOME in tmp_path so no test touches the user's generation cache."""
    from orchestra.backends import base as backends_base

    BACKENDS.add("fake", FakeBackend)
    FakeBackend.reset()
    backends_base._LOADED.clear()
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "orchestra-home"))
    yield FakeBackend
    backends_base._LOADED.clear()
    FakeBackend.reset()


# --- helpers to build tasks and recipes ----------------------------------------------------


def write_sums(path: Path, count: int, *, extra: dict[int, str] | None = None) -> str:
    """A JSONL task of `count` sums ("Compute a + b ="), all in the test split; returns its spec.

    `extra` appends words to some prompts by row number (e.g. {2: "EXPLODE"}).
    """
    extra = extra or {}
    with path.open("w") as handle:
        for i in range(count):
            a, b = i + 2, 2 * i + 1
            prompt = f"Compute {a} + {b} = {extra.get(i, '')}".strip()
            handle.write(json.dumps({"id": f"p{i}", "prompt": prompt, "answer": a + b, "split": "test"}) + "\n")
    return f"jsonl:{path}"


def vote_recipe(name: str = "vote", *, n: int = 4, max_tokens: int = 64, budget: dict[str, Any] | None = None,
                seed: int = 0) -> dict[str, Any]:
    """sample n -> majority_vote, on one fake model, as a plain dict (Recipe.model_validate it)."""
    recipe: dict[str, Any] = {
        "name": name,
        "models": {"m": {"backend": "fake", "model": "fake-model"}},
        "seed": seed,
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": n, "temperature": 0.7, "max_tokens": max_tokens}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
        ],
        "output": "vote",
    }
    if budget:
        recipe["budget"] = budget
    return recipe
