"""The `probe` PRM: a trained head on the generator's hidden states.

Recipe use: `prm: {name: probe, options: {path: recipes/probes/FILE.safetensors}}`.
The file comes from `orchestra reward train`; it names the model whose states it
was trained on, and scoring with any other model is refused (a head on another
model's states would return confident nonsense).

Each step's score is sigmoid(head(state at the step's last token)): the probe's
estimate that a solution continued from there ends correct. A step that arrives
with its hidden state costs nothing more; the others are read through the
backend in one batched round (`orchestra.reward.probe_features`). A carried state must
be the one the probe was trained on: the final-layer state *at* the step's last
token (the one that predicts the token after the step), not the state that
predicted that last token (`Completion.hidden_states[-1]` of the step's generation
is the latter, one position earlier).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestra.backends import HIDDEN_STATES
from orchestra.context import Context
from orchestra.reward.process_reward import PRMSpec, Step, process_reward_model

#: Loaded probes by (resolved path, modification time): a search scores thousands of prefixes.
_LOADED: dict[tuple[str, float], object] = {}


def _load(path_option: object):
    """The (head, metadata) a spec's `path` option names, loaded once per file version."""
    from orchestra.reward.probe_head import load_probe  # torch only when a probe is really used

    if not isinstance(path_option, (str, Path)) or not str(path_option):
        raise ValueError("the probe PRM needs options.path: a file written by `orchestra reward train`")
    path = Path(path_option).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"probe file {path_option} not found (resolved to {path})")
    key = (str(path), path.stat().st_mtime)
    if key not in _LOADED:
        _LOADED[key] = load_probe(path)
    return _LOADED[key]


@process_reward_model("probe", requires=(HIDDEN_STATES,))
async def probe_reward(ctx: Context, spec: PRMSpec, steps: Sequence[Step]) -> list[float]:
    """P(correct) per step prefix, from the probe file's head on the model's hidden states."""
    from orchestra.reward.probe_features import prefix_hidden_states

    head, metadata = _load(spec.options.get("path"))
    handle = ctx.model(spec.model)
    model_name = handle.backend.info.name
    if model_name != metadata.model:
        raise ValueError(
            f"probe {spec.options['path']} was trained on {metadata.model} (hidden size "
            f"{metadata.hidden_size}), but the PRM's model {handle.alias!r} is {model_name}; "
            "train a probe for this model with `orchestra reward train`"
        )
    missing = [i for i, step in enumerate(steps) if step.hidden_state is None]
    states: list[Sequence[float] | None] = [step.hidden_state for step in steps]
    if missing:
        prefixes, text = [], ""
        for step in steps:
            text += step.text
            prefixes.append(text)
        read = await prefix_hidden_states(handle, ctx.problem.messages, [prefixes[i] for i in missing])
        for i, state in zip(missing, read):
            states[i] = state
    for state in states:
        if len(state) != metadata.hidden_size:  # type: ignore[arg-type]
            raise ValueError(
                f"probe {spec.options['path']} expects hidden states of size {metadata.hidden_size}, "
                f"got {len(state)} from model {handle.alias!r}"  # type: ignore[arg-type]
            )
    return head.probabilities(states)  # type: ignore[arg-type]
