"""What a technique sees while it runs: its problem, its models, its budget, its RNG.

Model calls go through a `ModelHandle`, which is where the cross-cutting rules
live: the budget is planned before the call, cached samples are replayed, and
usage is booked to the node, the model and the problem.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestra.answers import extract_answer
from orchestra.backends import LOGPROBS, Backend, Completion, GenerationRequest, GenerationResult, Prompt
from orchestra.budget import Meter, plan_call, settle_call
from orchestra.cache import GenerationCache, request_key
from orchestra.candidate import Candidate
from orchestra.problem import Message, Problem
from orchestra.usage import Usage

if TYPE_CHECKING:
    from orchestra.tasks import Task


@dataclass
class Ledger:
    """Usage of one problem, broken down by node and by model, checked against meters."""

    meters: list[Meter]
    total: Usage = field(default_factory=Usage)
    by_node: dict[str, Usage] = field(default_factory=dict)
    by_model: dict[str, Usage] = field(default_factory=dict)
    shrunk_calls: int = 0

    def book(self, node: str, model: str, usage: Usage) -> None:
        self.total = self.total + usage
        self.by_node[node] = self.by_node.get(node, Usage()) + usage
        self.by_model[model] = self.by_model.get(model, Usage()) + usage


@dataclass
class ModelHandle:
    """A model as one node of one problem sees it."""

    alias: str
    backend: Backend
    ledger: Ledger
    node: str
    cache: GenerationCache | None = None

    @property
    def model_key(self) -> str:
        """The generation cache's name for the model (the backend may name it more exactly
        than the spec, e.g. with the dtype `auto` chose)."""
        return self.backend.model_key

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate within budget, replaying whatever the cache already holds.

        The prompt is rendered and counted once (`Backend.prepare`): the budget plans on
        its token count, the cache keys on its text, the backend generates from it.
        """
        started = time.monotonic()
        prompt = self.backend.prepare(request)
        prompt_tokens = prompt.tokens
        parameters = self.backend.info.parameters or 0
        plan = plan_call(
            self.ledger.meters,
            prompt_tokens=prompt_tokens * self.backend.prefills(request),
            n=request.n,
            max_tokens=request.max_tokens,
            flops_per_token=2.0 * parameters,
            prompt_estimated=prompt.estimated,
        )
        if plan.shrunk:
            self.ledger.shrunk_calls += 1
            request = request.model_copy(update={"max_tokens": plan.max_tokens})
        actual = Usage()
        try:
            completions, backend_usage, hits, reported = await self._generate_cached(request, prompt)
            # A remote server's own count replaces the pre-call estimate; a server that took
            # the prompt once per sample (it ignored `n`) is booked for every copy it was sent.
            prompt_tokens = reported or prompt_tokens
            booked_prompt = max(prompt_tokens, backend_usage.prompt_tokens)
            completion_tokens = sum(c.completion_tokens for c in completions)
            # Logical cost: the same whether or not samples were replayed from the cache.
            logical = Usage(
                calls=1,
                prompt_tokens=booked_prompt,
                cached_prompt_tokens=backend_usage.cached_prompt_tokens,
                completion_tokens=completion_tokens,
                flops=2.0 * parameters * (booked_prompt + completion_tokens),
                cache_hits=hits,
                estimated_calls=backend_usage.estimated_calls,
            )
            actual = logical.model_copy(update={"seconds": time.monotonic() - started})
        finally:
            settle_call(self.ledger.meters, plan, actual)
            self.ledger.book(self.node, self.alias, actual)
        return GenerationResult(completions=tuple(completions), prompt_tokens=prompt_tokens, usage=actual)

    async def _generate_cached(self, request: GenerationRequest, prompt: Prompt):
        """(completions, backend usage, samples replayed, prompt tokens the backend reported)."""
        wants_logprobs = request.logprobs
        if LOGPROBS in self.backend.capabilities:
            request = request.model_copy(update={"logprobs": True})  # cache them for later readers
        if self.cache is None or request.seed is None:
            result = await self.backend.generate(request, prompt)
            return list(result.completions), result.usage, 0, result.prompt_tokens
        key = request_key(self.model_key, prompt.text, request)
        found = self.cache.lookup(key, request.first_index, request.n)
        usable = {
            i: c
            for i, (c, _) in found.items()
            if (not wants_logprobs or c.logprobs is not None)
            and (not request.hidden_states or c.hidden_states is not None)
        }
        missing = [i for i in range(request.first_index, request.first_index + request.n) if i not in usable]
        usage = Usage()
        hits = request.n
        reported = next((p for _, p in found.values()), 0)
        if missing:
            start = missing[0]  # regenerate from the first gap: samples are per-index seeded
            hits = start - request.first_index
            fresh_request = request.model_copy(
                update={"first_index": start, "n": request.first_index + request.n - start}
            )
            result = await self.backend.generate(fresh_request, prompt)
            self.cache.store(key, start, list(result.completions), result.prompt_tokens)
            usage = result.usage
            reported = result.prompt_tokens
            for offset, completion in enumerate(result.completions):
                usable[start + offset] = completion
        ordered = [usable[i] for i in range(request.first_index, request.first_index + request.n)]
        return ordered, usage, hits, reported


@dataclass
class Context:
    """Everything a technique may use; one per (problem, node).

    `record(event)` is how a technique says what it did beyond its output
    candidates (a search's scored partial answers, its resampling and pruning):
    each event is a small JSON-able dict with a `kind`, kept in call order, and
    the executor writes them into the node's trace record as `"events"` (left
    out when there are none). `orchestra report` draws step-wise searches from them.
    """

    problem: Problem
    node: str
    task: Task | None
    models: dict[str, ModelHandle]
    default_model: str | None
    seed: int
    rng: random.Random
    events: list[dict] = field(default_factory=list)

    def record(self, event: dict) -> None:
        """Note one thing this node did, for its trace record (see the class docstring)."""
        self.events.append(event)

    def model(self, alias: str | None = None) -> ModelHandle:
        alias = alias or self.default_model
        if alias is None or alias not in self.models:
            raise KeyError(f"node {self.node!r} has no model {alias!r}")
        return self.models[alias]

    async def sample(
        self,
        *,
        n: int = 1,
        messages: tuple[Message, ...] | None = None,
        parents: tuple[str, ...] = (),
        model: str | None = None,
        **settings,
    ) -> list[Candidate]:
        """Sample `n` candidates for `messages` (default: the problem's) with this node's seed.
        The problem's tools, tool_choice and response_format apply unless `settings` set them."""
        handle = self.model(model)
        for name in ("tools", "tool_choice", "response_format"):
            if settings.get(name) is None:
                settings[name] = getattr(self.problem, name)
        request = GenerationRequest(
            messages=messages if messages is not None else self.problem.messages,
            n=n,
            seed=settings.pop("seed", self.seed),
            **settings,
        )
        result = await handle.generate(request)
        return [self.candidate(c, handle.alias, result.prompt_tokens, parents) for c in result.completions]

    async def ask(self, prompt: str, *, max_tokens: int, temperature: float = 0.0, model: str | None = None) -> str:
        """The model's one reply to a single user prompt, with this node's seed: text a critic,
        ranker or summariser reads and parses, not a candidate answer."""
        request = GenerationRequest(
            messages=(Message(role="user", content=prompt),), max_tokens=max_tokens, temperature=temperature, seed=self.seed
        )
        result = await self.model(model).generate(request)
        return result.completions[0].text

    def candidate(
        self, completion: Completion, model: str, prompt_tokens: int, parents: tuple[str, ...] = ()
    ) -> Candidate:
        answer = self.task.extract_answer(completion.text) if self.task else extract_answer(completion.text)
        return Candidate(
            text=completion.text,
            node=self.node,
            parents=parents,
            model=model,
            answer=answer,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion.completion_tokens,
            finish_reason=completion.finish_reason,
            logprobs=completion.logprobs,
        )
