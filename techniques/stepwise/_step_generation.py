"""Step generation: grow answers one step at a time, each continuing a partial answer.

A step ends at a delimiter (default a blank line, "\\n\\n") or after `step_tokens`
tokens, whichever comes first; with `delimiter: null` every step is a fixed
token count. A partial answer is continued as the final assistant turn of the
problem's conversation (the CONTINUATION capability), and, where the generating
backend returned token ids, by those ids too (`GenerationRequest.continuation_ids`):
the local backend then feeds exactly the tokens it generated, so the partial
answer's KV is found in its prefix cache and forks of one parent (particles,
beams, children) prefill only what is new instead of the whole prefix.

Every call goes through the node's `ModelHandle`, so the generator's tokens are
metered by the recipe's budget like any other sample. Sample indices are
numbered across the whole search (`first_index`), so particles with the same
prefix draw different continuations and a rerun draws the same ones.

A step ends the answer when the model stops on its own (EOS); it is a step
boundary when the sample stopped on the delimiter (`Completion.stopped_by`) or
ran out of `step_tokens`. A backend that cannot say which stop string ended a
sample reports neither; its "stop" is read as the end of the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from orchestra.backends import HIDDEN_STATES, LOGPROBS, Completion, GenerationRequest
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.reward.process_reward import Step

T = TypeVar("T")


class StepParams(BaseModel):
    """How steps are generated; shared by every step-wise search technique."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str | None = Field(
        default="\n\n", min_length=1, description="A step ends after this string; null: steps of `step_tokens` tokens."
    )
    step_tokens: int = Field(default=64, ge=1, description="Most tokens of one step.")
    max_steps: int = Field(default=8, ge=1, description="Steps after which an answer is cut off (counted as finished).")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)


@dataclass(frozen=True)
class PartialAnswer:
    """An answer grown so far: its steps, and how to continue it token-exactly."""

    steps: tuple[Step, ...] = ()
    #: Token ids of each step, where the backend gave them (None: continue from text).
    step_ids: tuple[tuple[int, ...], ...] | None = ()
    #: The model ended it (EOS), or it reached `max_steps`; a finished answer is never extended.
    finished: bool = False
    #: "stop" when the model ended it, "length" when `max_steps` or the budget cut it off.
    finish_reason: str | None = None
    #: Generator tokens of each step.
    step_tokens: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        return "".join(step.text for step in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(self.step_tokens)

    @property
    def token_ids(self) -> tuple[int, ...] | None:
        if self.step_ids is None:
            return None
        return tuple(t for ids in self.step_ids for t in ids)

    def cut_off(self) -> PartialAnswer:
        """Finished as it is (out of steps or budget)."""
        return self if self.finished else replace(self, finished=True, finish_reason="length")

    def prefix(self, steps: int) -> PartialAnswer:
        """Its first `steps` steps, unfinished unless they are all of it (particle Gibbs'
        reference trajectory is replayed this way)."""
        if steps >= len(self.steps):
            return self
        ids = None if self.step_ids is None else self.step_ids[:steps]
        return PartialAnswer(steps=self.steps[:steps], step_ids=ids, step_tokens=self.step_tokens[:steps])


def continuation_request(
    ctx: Context, partial: PartialAnswer, params: StepParams, *, n: int, first_index: int, **settings
) -> GenerationRequest:
    """The request that continues `partial` by one step (also what a PRM that needs the
    partial answer's context, such as a probe, rebuilds it from)."""
    messages = ctx.problem.messages
    ids = None
    if partial.steps:
        messages = (*messages, Message(role="assistant", content=partial.text))
        ids = partial.token_ids
    return GenerationRequest(
        messages=messages,
        continuation_ids=ids,
        n=n,
        max_tokens=params.step_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=(params.delimiter,) if params.delimiter else (),
        seed=ctx.seed,
        first_index=first_index,
        **settings,
    )


def next_partial(partial: PartialAnswer, completion: Completion, params: StepParams) -> PartialAnswer:
    """`partial` with `completion` as its next step."""
    text = completion.text
    at_boundary = completion.finish_reason == "length" or completion.stopped_by is not None
    if completion.stopped_by is not None:
        text += completion.stopped_by  # backends cut the stop string off; the step keeps it (as its tokens spell it)
    step = Step(text=text, logprobs=completion.logprobs)
    step_ids = None
    if partial.step_ids is not None and completion.token_ids is not None:
        step_ids = (*partial.step_ids, completion.token_ids)
    grown = PartialAnswer(
        steps=(*partial.steps, step),
        step_ids=step_ids,
        step_tokens=(*partial.step_tokens, completion.completion_tokens),
    )
    if not at_boundary:
        return replace(grown, finished=True, finish_reason="stop")
    if len(grown.steps) >= params.max_steps:
        return grown.cut_off()
    return grown


async def settle_all(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Await every coroutine, then raise the first error: a budget refusal in one branch
    must not leave its siblings running (and spending) after the search has moved on."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class StepGenerator:
    """Grows the partial answers of one search on one problem."""

    def __init__(self, ctx: Context, params: StepParams, *, model: str | None = None, hidden_states: bool = False):
        self.ctx = ctx
        self.params = params
        self.model = model
        handle = ctx.model(model)
        self.logprobs = LOGPROBS in handle.backend.capabilities
        #: Fill `Step.hidden_state` (a PRM reads it) where the backend can give it.
        self.hidden_states = hidden_states and HIDDEN_STATES in handle.backend.capabilities
        #: Samples drawn so far: the next call's `first_index`.
        self.drawn = 0
        #: Steps generated so far (the search's step allowance counts these).
        self.steps_generated = 0

    async def extend(self, partial: PartialAnswer, n: int) -> list[PartialAnswer]:
        """`n` next steps of one unfinished partial answer, as `n` grown answers."""
        if partial.finished:
            raise ValueError("a finished answer is never extended")
        first, self.drawn = self.drawn, self.drawn + n
        self.steps_generated += n
        request = continuation_request(self.ctx, partial, self.params, n=n, first_index=first, logprobs=self.logprobs)
        result = await self.ctx.model(self.model).generate(request)
        grown = [next_partial(partial, c, self.params) for c in result.completions]
        if self.hidden_states:
            grown = await settle_all(self._with_hidden_state(g) for g in grown)
        return grown

    async def extend_each(self, partials: Sequence[PartialAnswer], counts: Sequence[int] | None = None) -> list[list[PartialAnswer]]:
        """Children of each partial answer (`counts[i]` of them, default 1), concurrently.

        Partial answers with the same text (copies made by resampling) are asked for in
        one request of n samples: one prefill serves them all.
        """
        counts = list(counts) if counts is not None else [1] * len(partials)
        groups: dict[str, list[int]] = {}
        for i, partial in enumerate(partials):
            groups.setdefault(partial.text, []).append(i)
        order = list(groups.values())
        grown = await settle_all(
            self.extend(partials[members[0]], sum(counts[i] for i in members)) for members in order
        )
        out: list[list[PartialAnswer]] = [[] for _ in partials]
        for members, children in zip(order, grown):
            at = 0
            for i in members:
                out[i] = children[at : at + counts[i]]
                at += counts[i]
        return out

    async def _with_hidden_state(self, partial: PartialAnswer) -> PartialAnswer:
        """Fill the new step's `hidden_state`: the final-layer state after its last token.

        Generation returns the state that *predicted* each token, so the state after
        the last one needs one more position: a 1-token continuation, whose prefix is
        in the cache (one token of prefill, metered like any call).
        """
        request = continuation_request(
            self.ctx, partial, self.params, n=1, first_index=0, hidden_states=True
        ).model_copy(update={"max_tokens": 1, "temperature": 0.0, "stop": ()})
        result = await self.ctx.model(self.model).generate(request)
        rows = result.completions[0].hidden_states
        if not rows:
            return partial
        last = replace(partial.steps[-1], hidden_state=tuple(rows[0]))
        return replace(partial, steps=(*partial.steps[:-1], last))
