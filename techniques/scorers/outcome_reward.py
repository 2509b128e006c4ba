"""The `orm` scorer: a trained outcome verifier's P(exactly right) for each answer of a pool.

`scorer: orm` uses the verifier shipped with orchestra for the candidates' model
(`orchestra/reward/verifiers/`); `scorer: orm:PATH` uses a file written by
`orchestra reward train --outcome`. It is a pool scorer: a candidate's score
depends on the others (how often its answer recurs), so a node's candidates are
scored together. It reads nothing but what sampling returned (answers,
token log-probabilities, lengths): no extra model call.

A verifier refuses candidates of another model than the one it was trained
on: its features are that model's habits.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from orchestra.backends import LOGPROBS
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import scorer

#: Where the verifiers shipped with orchestra live (package data of `orchestra.reward`).
SHIPPED = Path(str(files("orchestra.reward") / "verifiers"))

#: Loaded verifiers by (resolved path, modification time): a search scores thousands of pools.
_LOADED: dict[tuple[str, float], object] = {}


def _load(path: Path):
    from orchestra.reward.outcome_reward import OutcomeReward  # torch only when a verifier is really used

    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"verifier file {path} not found; write one with `orchestra reward train --outcome`")
    key = (str(path), path.stat().st_mtime)
    if key not in _LOADED:
        _LOADED[key] = OutcomeReward.load(path)
    return _LOADED[key]


@functools.cache  # the scorer asks once per pool; the shipped files do not change while orchestra runs
def shipped_verifier(model: str) -> Path:
    """The shipped verifier file trained on `model` (a backend's model name, e.g. `local:smollm2-135m-instruct`)."""
    from orchestra.reward.outcome_reward import read_metadata

    for path in sorted(SHIPPED.glob("*.safetensors")):
        if read_metadata(path).model == model:
            return path
    raise ValueError(
        f"no verifier is shipped for {model}; train one with `orchestra reward train --outcome --task TASK "
        f"--model MODEL -o FILE.safetensors` and name it as the scorer `orm:FILE.safetensors`"
    )


@scorer("orm", pool=True, requires=(LOGPROBS,), argument="a verifier file (default: the one shipped for the model)")
async def outcome_reward(ctx: Context, candidates: list[Candidate], argument: str | None = None) -> list[float]:
    """P(exactly right) per candidate, from a trained outcome verifier reading the whole pool."""
    if not candidates:
        return []
    models = {ctx.model(c.model).backend.info.name for c in candidates}
    if len(models) > 1:
        raise ValueError(f"the verifier scores one model's answers at a time; this pool mixes {sorted(models)}")
    [model] = models
    verifier = _load(Path(argument) if argument else shipped_verifier(model))
    if verifier.metadata.model != model:
        raise ValueError(
            f"verifier {argument} was trained on {verifier.metadata.model}'s answers, but these are {model}'s; "
            "train one for this model with `orchestra reward train --outcome`"
        )
    return verifier.score(candidates)
