"""The probe PRM end to end on the real default model: `orchestra reward train` on a few
problems, the file it writes, and the `probe` PRM scoring real steps with it. ~30 s."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from orchestra.backends import GenerationRequest
from orchestra.cli import app
from orchestra.context import Context, Ledger, ModelHandle
from orchestra.backends import get_backend
from orchestra.reward.probe_features import continuation_messages, prefix_hidden_states
from orchestra.reward.probe_head import load_probe
from orchestra.reward.process_reward import PRMSpec, score_steps, split_steps
from orchestra.backends import ModelSpec
from orchestra.tasks import load_task

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
#: float32 so that a state read twice, in different batches, agrees closely.
SPEC = ModelSpec(dtype="float32")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("probe")
    out = folder / "probe.safetensors"
    result = CliRunner().invoke(app, [
        "reward", "train", "--task", TASK, "--out", str(out), "-n", "3", "--rollouts", "2", "--continuations", "2",
        "--max-tokens", "64", "--max-steps", "3", "--dtype", "float32", "--epochs", "50",
        "--cache", str(folder / "cache.sqlite"),
    ])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_reward_train_writes_a_small_probe_for_the_model(trained) -> None:
    out, output = trained
    assert "held-out AUC, probe" in output and "label balance" in output and "tokens" in output
    head, meta = load_probe(out)
    assert meta.model == get_backend(SPEC).info.name == "local:smollm2-135m-instruct"
    assert meta.hidden_size == 576 and meta.head == "linear" and meta.delimiter == "\n\n"
    assert (meta.problems_train, meta.problems_heldout) == (2, 1)
    assert meta.steps_train > 0 and meta.steps_heldout > 0 and meta.tokens > 0
    assert 0.0 <= meta.mean_label <= 1.0
    assert out.stat().st_size < 20_000
    shown = CliRunner().invoke(app, ["reward", "show", str(out)])
    assert shown.exit_code == 0 and "local:smollm2-135m-instruct" in shown.output


def test_prefix_state_is_the_models_last_layer_state_at_the_prefix_end() -> None:
    """What the probe reads really is the final (normed) hidden state at the prefix's last token."""
    backend = get_backend(SPEC)
    handle = ModelHandle(alias="m", backend=backend, ledger=Ledger(meters=[]), node="t")
    problem = load_task(TASK).problems("train", 1)[0]
    prefix = "Let me add the numbers.\n\n"
    [state] = asyncio.run(prefix_hidden_states(handle, problem.messages, [prefix]))
    ids = list(backend.prepare(GenerationRequest(messages=continuation_messages(problem.messages, prefix))).token_ids)
    assert backend.tokenizer.decode(ids).endswith(prefix)  # the turn is continued, not closed
    with torch.no_grad():
        out = backend.model(torch.tensor([ids]), output_hidden_states=True)
    expected = out.hidden_states[-1][0, -1]
    assert torch.allclose(torch.tensor(state), expected, atol=2e-3, rtol=1e-3)


def test_probe_prm_scores_real_steps(trained) -> None:
    out, _ = trained
    backend = get_backend(SPEC)
    handle = ModelHandle(alias="m", backend=backend, ledger=Ledger(meters=[]), node="t")
    task = load_task(TASK)
    problem = task.problems("test", 1)[0]
    ctx = Context(problem, "search", task, {"m": handle}, "m", 0, random.Random(0))
    answer = asyncio.run(handle.generate(GenerationRequest(messages=problem.messages, max_tokens=64))).completions[0].text
    steps = split_steps(answer + "\n\nAnswer: 7", "\n\n")
    assert len(steps) >= 2
    from orchestra.techniques.process_rewards.probe import probe_reward

    spec = PRMSpec(name="probe", aggregate="min", options={"path": str(out)})
    scores = asyncio.run(probe_reward(ctx, spec, steps))
    assert len(scores) == len(steps) and all(0.0 < s < 1.0 for s in scores)
    assert len(set(scores)) > 1  # different prefixes, different states, different scores
    # one prefix alone (another batch) scores the same: the PRM is a function of the prefix
    alone = asyncio.run(probe_reward(ctx, spec, steps[:1]))
    assert alone[0] == pytest.approx(scores[0], abs=1e-3)
    assert asyncio.run(score_steps(ctx, spec, steps)) == pytest.approx(min(scores), abs=1e-3)
    assert handle.ledger.total.calls >= 1 + len(steps)  # states were read through the metered handle
