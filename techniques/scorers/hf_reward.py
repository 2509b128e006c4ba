"""The `hf_reward` scorer: an off-the-shelf outcome reward model from a local Hugging Face folder.

`scorer: hf_reward:/models/Skywork-Reward-V2-Llama-3.1-8B` rates each candidate
with a sequence-classification reward model (one logit) read through its chat
template, as sigmoid(logit) so the score is in [0, 1] and can weigh a vote. It
is a pool scorer only so that a node's candidates share one batch on the
device; each score depends on its own reply alone. It runs no generator call:
the reward model is loaded in this process (`orchestra.reward.pretrained_reward`).
"""

from __future__ import annotations

import asyncio

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import scorer


@scorer("hf_reward", pool=True, argument="a local Hugging Face reward model folder (sequence classification)")
async def hf_reward(ctx: Context, candidates: list[Candidate], argument: str | None = None) -> list[float]:
    """sigmoid(reward) of each candidate's reply to the problem, from the folder's reward model."""
    from orchestra.reward.pretrained_reward import load_reward_model  # torch only when one is used

    if not argument:
        raise ValueError("the hf_reward scorer needs a folder: `hf_reward:PATH`")
    model = load_reward_model(argument)
    return list(await asyncio.gather(*(model.outcome(ctx.problem.prompt, c.text) for c in candidates)))
