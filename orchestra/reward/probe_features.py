"""What the trained probe reads: the generator's hidden state at the end of a partial answer.

The state is taken through the Backend protocol, never from a concrete backend:
a request whose messages are the problem's plus an assistant turn holding the
partial answer (CONTINUATION: that turn is continued, not closed), asking for one
token with `hidden_states=True`. `Completion.hidden_states[0]` is the final-layer
state that predicted the first new token, i.e. the state at the partial answer's
last token. The engine's prefix cache holds the prefix's KV when the partial
answer was just generated, so this costs about one token of prefill.

Training (`orchestra.reward.training`) and the `probe` PRM both read states here,
so the head is applied to exactly the kind of vector it was trained on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestra.backends import GenerationRequest
from orchestra.problem import Message

if TYPE_CHECKING:
    from orchestra.context import ModelHandle

#: The state request is greedy and its one token is thrown away; a fixed seed lets the
#: generation cache replay it when the same prefix is scored again.
STATE_SEED = 0


def continuation_messages(messages: Sequence[Message], partial: str) -> tuple[Message, ...]:
    """The problem's messages plus an assistant turn holding `partial`, to be continued."""
    return (*messages, Message(role="assistant", content=partial))


async def prefix_hidden_states(
    handle: ModelHandle, messages: Sequence[Message], partials: Sequence[str]
) -> list[tuple[float, ...]]:
    """The final-layer hidden state at the last token of each partial answer.

    All requests are made at once so the backend batches them.
    """
    requests = [
        GenerationRequest(
            messages=continuation_messages(messages, partial),
            max_tokens=1,
            temperature=0.0,
            seed=STATE_SEED,
            hidden_states=True,
        )
        for partial in partials
    ]
    results = await asyncio.gather(*(handle.generate(request) for request in requests))
    states = []
    for result in results:
        completion = result.completions[0]
        if not completion.hidden_states:
            raise ValueError(
                f"model {handle.alias!r} returned no hidden states; the probe needs a backend "
                "with the hidden_states capability (e.g. `local`)"
            )
        states.append(completion.hidden_states[0])
    return states
