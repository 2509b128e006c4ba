"""Yes/No verdicts: their probability at the verdict position, or as written in text.

A judge's score is read from the model's next-token distribution right after
"Verdict:", not from whatever token happened to be sampled there: P(Yes) /
(P(Yes) + P(No)) is a graded confidence, where a substring match gives only 0 or
1 and breaks on "Yes, but no...". Tokens count as Yes or No by their text,
stripped and lower-cased, so " Yes", "Yes" and " yes" all add to P(Yes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from orchestra.backends import GenerationRequest
from orchestra.context import Context
from orchestra.problem import Message

#: What a judge's reply ends with before its verdict token.
VERDICT_CUE = "Verdict:"
#: How many most likely tokens are read at the verdict position (the backend's maximum).
VERDICT_TOP_LOGPROBS = 20
#: The score of a verdict position where neither Yes nor No is among the most likely
#: tokens: no information either way.
UNDECIDED = 0.5

_WRITTEN = re.compile(r"verdict\W{0,6}(yes|no)\b", re.IGNORECASE)


def yes_probability(top_logprobs: Mapping[str, float]) -> float | None:
    """P(Yes) normalised over the Yes and No tokens of one next-token distribution.

    None when neither appears among the tokens given (the model wanted to say
    something else; the caller decides what that counts as).
    """
    yes = no = 0.0
    for token, logprob in top_logprobs.items():
        word = token.strip().lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


def written_verdict(text: str) -> bool | None:
    """The last "Verdict: Yes/No" written in `text` (markdown such as "**Verdict:** no"
    allowed); None when the text writes no verdict."""
    found = _WRITTEN.findall(text)
    if not found:
        return None
    return found[-1].lower() == "yes"


def verdict_reply(reasoning: str) -> str:
    """The assistant turn to continue for the verdict token: the reasoning, then the cue.

    Whatever the reasoning ended with (a cut-off sentence, its own half-written
    verdict that a stop string removed), the cue goes on a line of its own.
    """
    reasoning = reasoning.rstrip()
    return f"{reasoning}\n{VERDICT_CUE}" if reasoning else VERDICT_CUE


async def verdict_probability(
    ctx: Context, messages: tuple[Message, ...], reasoning: str = "", *, model: str | None = None
) -> float:
    """Continue the assistant turn `reasoning` + "Verdict:" by one token and return P(Yes).

    One greedy token with the top log-probabilities of its position; `UNDECIDED`
    when neither Yes nor No is among them. Needs a backend with the logprobs and
    continuation capabilities. `model`: the alias to ask (default: the node's model).
    """
    request = GenerationRequest(
        messages=(*messages, Message(role="assistant", content=verdict_reply(reasoning))),
        max_tokens=1,
        temperature=0.0,
        top_logprobs=VERDICT_TOP_LOGPROBS,
        seed=ctx.seed,
    )
    result = await ctx.model(model).generate(request)
    positions = result.completions[0].top_logprobs or ()
    probability = yes_probability(positions[0]) if positions else None
    return UNDECIDED if probability is None else probability
