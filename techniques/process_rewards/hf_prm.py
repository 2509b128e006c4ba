"""The `hf_prm` PRM: an off-the-shelf process reward model from a local Hugging Face folder.

Recipe use: `prm: {name: hf_prm, options: {path: /models/Qwen2.5-Math-PRM-7B, trust_remote_code: true}}`
or `{path: /models/math-shepherd-mistral-7b-prm}`. The folder's format is read
from its config (a two-class token head at `<extra_0>`, or `+`/`-` logits at a
` ки` step tag; see `orchestra.reward.pretrained_reward` for the options). Each
prefix is one row of a batch on the local device, concurrent prefixes (a
search's particles) share a forward pass; the model reads the problem and the
steps, not the generator, so any backend's steps can be scored.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestra.context import Context
from orchestra.reward.process_reward import PRMSpec, Step, process_reward_model


@process_reward_model("hf_prm")
async def hf_prm(ctx: Context, spec: PRMSpec, steps: Sequence[Step]) -> list[float]:
    """The folder's process reward model's score for each step, in [0, 1]."""
    from orchestra.reward.pretrained_reward import load_reward_model, parse_options  # torch only when used

    options = dict(spec.options)
    path = options.pop("path", None)
    if not path:
        raise ValueError("the hf_prm PRM needs options.path: a local Hugging Face process reward model folder")
    model = load_reward_model(path, parse_options(options, "hf_prm options"))
    return await model.steps(ctx.problem.prompt, [step.text for step in steps])
