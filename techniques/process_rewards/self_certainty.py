"""The `self_certainty` PRM: how sure the generator was of each step, at no model call.

A step's score is the geometric mean of the probabilities the generator gave
its own tokens, exp(mean log-probability). It reads the log-probabilities step
generation already returned, so it costs no model call: the cheapest PRM, and a
measure of how sure the model was, not of correctness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from orchestra.backends import LOGPROBS
from orchestra.context import Context
from orchestra.reward.process_reward import PRMSpec, Step, process_reward_model


@process_reward_model("self_certainty", requires=(LOGPROBS,))
async def self_certainty(ctx: Context, spec: PRMSpec, steps: Sequence[Step]) -> list[float]:
    """exp(mean token log-probability) of each step, from the generator's own logprobs."""
    scores = []
    for index, step in enumerate(steps):
        if step.logprobs is None:
            raise ValueError(
                f"step {index} has no token log-probabilities: the self_certainty PRM reads the "
                "generator's own, so its steps must come from step generation on a backend with logprobs"
            )
        scores.append(math.exp(sum(step.logprobs) / len(step.logprobs)) if step.logprobs else 1.0)
    return scores
