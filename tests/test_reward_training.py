"""Probe reward training without a model: AUC math, step labelling with the scripted backend,
problem-level held-out split, the probe file round trip and the probe PRM's checks. Fast."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import torch
from fake_backend import FakeBackend, fake_backend, write_sums  # noqa: F401  (fixture)
from safetensors.torch import save_file

from orchestra.backends import GenerationRequest, GenerationResult, Prompt
from orchestra.context import Context, Ledger, ModelHandle
from orchestra.reward.probe_features import continuation_messages
from orchestra.reward.probe_head import ProbeHead, ProbeMetadata, load_probe, read_metadata, save_probe, train_head
from orchestra.reward.process_reward import PRMSpec, Step, score_steps, split_steps
from orchestra.backends import ModelSpec
from orchestra.reward.training import LabelledStep, LabellingSettings, fit_probe, label_problems, split_problems
from orchestra.reward.roc_auc import roc_auc
from orchestra.tasks import load_task

# --- AUC ----------------------------------------------------------------------------------


def test_auc_matches_a_hand_count() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([0.9, 0.1], [True, False]) == 1.0
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75


def test_auc_equals_the_pairwise_definition_with_ties() -> None:
    rng = random.Random(3)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.7]) for _ in range(60)]
    labels = [rng.random() < 0.4 for _ in range(60)]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    pairwise = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def test_auc_refuses_a_single_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0.1, 0.2], [True, True])


# --- labelling with the scripted backend ---------------------------------------------------


def fake_state(prompt: str) -> tuple[float, ...]:
    """A deterministic 4-d "hidden state" of a prompt: what the probe reads."""
    return (float(len(prompt)), float("bad" in prompt), float("good" in prompt), 1.0)


class StatefulFake(FakeBackend):
    """The scripted backend plus hidden states, so the probe pipeline can run on it."""

    capabilities = frozenset({"logprobs", "continuation", "hidden_states"})

    async def complete(self, request: GenerationRequest, prompt: Prompt) -> GenerationResult:
        result = await super().complete(request, prompt)
        if not request.hidden_states:
            return result
        state = fake_state(prompt.text)
        completions = tuple(c.model_copy(update={"hidden_states": (state,) * c.completion_tokens}) for c in result.completions)
        return result.model_copy(update={"completions": completions})


#: Rollout i of the problem "Compute 2 + 1 =" (answer 3); steps are cut at "| ".
ROLLOUTS = ("good | fine | Answer: 3", "bad | Answer: 99", "meh | Answer: 3")


def script(request: GenerationRequest, prompt: str, index: int) -> str:
    """Rollouts as above; from a prefix, "good" always recovers, "bad" never, "meh" every other time."""
    last = request.messages[-1]
    if last.role != "assistant":
        return ROLLOUTS[index % len(ROLLOUTS)]
    if "good" in last.content:
        return "Answer: 3"
    if "bad" in last.content:
        return "Answer: 99"
    return "Answer: 3" if index % 2 == 0 else "Answer: 7"


def handle_for(backend) -> ModelHandle:
    return ModelHandle(alias="m", backend=backend, ledger=Ledger(meters=[]), node="test")


def label(tmp_path: Path, settings: LabellingSettings, problems: int = 1):
    FakeBackend.script = script
    task = load_task(write_sums(tmp_path / "sums.jsonl", problems))
    chosen = task.problems("test")
    seen = []
    handle = handle_for(StatefulFake(ModelSpec(backend="fake", model="fake-model")))
    steps = asyncio.run(label_problems(handle, task, chosen, settings, on_problem=lambda p, s: seen.append(p.id)))
    return steps, handle, seen


def test_steps_are_labelled_by_the_share_of_correct_continuations(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    settings = LabellingSettings(rollouts=3, continuations=4, delimiter="| ", temperature=0.7)
    steps, handle, _ = label(tmp_path, settings)
    by_prefix = {s.prefix: s for s in steps}
    assert list(by_prefix) == [
        "good | ", "good | fine | ", "good | fine | Answer: 3", "bad | ", "bad | Answer: 99", "meh | ", "meh | Answer: 3",
    ]
    # all continuations of a "good" prefix are right, and so is its rollout: label 1 from 5 samples
    assert (by_prefix["good | "].label, by_prefix["good | "].samples) == (1.0, 5)
    assert by_prefix["good | fine | "].label == 1.0
    # none from a "bad" prefix: label 0
    assert (by_prefix["bad | "].label, by_prefix["bad | "].samples) == (0.0, 5)
    # "meh": the correct rollout plus continuations 0 and 2 of 4: 3 of 5
    assert by_prefix["meh | "].label == pytest.approx(3 / 5)
    # a finished rollout is labelled by its own score alone
    assert (by_prefix["good | fine | Answer: 3"].label, by_prefix["good | fine | Answer: 3"].samples) == (1.0, 1)
    assert (by_prefix["bad | Answer: 99"].label, by_prefix["bad | Answer: 99"].samples) == (0.0, 1)
    assert [s.positive for s in steps] == [True, True, True, False, False, True, True]
    # the probe's input is the state at the prefix, read with the prefix as an assistant turn
    problem = load_task(write_sums(tmp_path / "sums.jsonl", 1)).problems("test")[0]
    rendered = handle.backend.render(GenerationRequest(messages=continuation_messages(problem.messages, "bad | ")))
    assert rendered.startswith("user: Compute 2 + 1 =") and rendered.endswith("answer.\nassistant: bad | ")
    assert by_prefix["bad | "].state == fake_state(rendered)
    assert all(s.mean_logprob is not None and s.mean_logprob < 0 for s in steps)


def test_partial_credit_labels_a_sample_wrong(fake_backend, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """A task that half-credits the wrong answer 99 (as reasoning-gym half-credits a sign error):
    the "bad" prefix's samples are all wrong, so its label is 0 and it is not a positive."""
    FakeBackend.script = script
    task = load_task(write_sums(tmp_path / "sums.jsonl", 1))
    exact = task.score
    monkeypatch.setattr(task, "score", lambda problem, text, answer: 0.5 if answer == "99" else exact(problem, text, answer))
    handle = handle_for(StatefulFake(ModelSpec(backend="fake", model="fake-model")))
    settings = LabellingSettings(rollouts=3, continuations=4, delimiter="| ")
    steps = asyncio.run(label_problems(handle, task, task.problems("test"), settings))
    by_prefix = {s.prefix: s for s in steps}
    assert (by_prefix["bad | "].label, by_prefix["bad | "].positive) == (0.0, False)
    assert (by_prefix["bad | Answer: 99"].label, by_prefix["bad | Answer: 99"].positive) == (0.0, False)
    assert by_prefix["meh | "].label == pytest.approx(3 / 5)  # right answers still count 1


def test_continuations_continue_the_prefix_and_states_cost_one_token(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    settings = LabellingSettings(rollouts=3, continuations=4, delimiter="| ", max_tokens=40)
    label(tmp_path, settings)
    calls = FakeBackend.log.calls
    rollouts = [c for c in calls if "assistant:" not in c.prompt]
    continuations = [c for c in calls if "assistant:" in c.prompt and c.max_tokens > 1]
    states = [c for c in calls if c.max_tokens == 1]
    assert len(rollouts) == 1 and rollouts[0].n == 3
    assert len(continuations) == 4  # "good | ", "good | fine | ", "bad | ", "meh | "; finished rollouts are not continued
    assert all(c.n == 4 and c.prompt.split("assistant: ")[1] for c in continuations)
    assert len({c.seed for c in continuations}) == 4  # each prefix has its own seed
    # the whole solution stays within max_tokens: "good | fine | " is 4 words, so 36 are left (floor 16)
    assert {c.prompt.split("assistant: ")[1]: c.max_tokens for c in continuations}["good | fine | "] == 36
    assert len(states) == 7 and all(c.temperature == 0.0 for c in states)


def test_max_steps_limits_the_prefixes_per_rollout(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    steps, _, seen = label(tmp_path, LabellingSettings(rollouts=3, continuations=2, delimiter="| ", max_steps=1), problems=3)
    assert {s.step for s in steps} == {1}
    assert len(steps) == 9 and seen and sorted(seen) == ["p0", "p1", "p2"]
    assert [s.problem_id for s in steps] == ["p0"] * 3 + ["p1"] * 3 + ["p2"] * 3  # problem order kept


# --- held-out split and training -------------------------------------------------------------


def synthetic_steps(problems: int, per_problem: int, seed: int = 0) -> list[LabelledStep]:
    """Steps whose label is a noisy function of state[0]: learnable, not trivially."""
    rng = random.Random(seed)
    steps = []
    for p in range(problems):
        for k in range(per_problem):
            x = rng.gauss(0, 1)
            label = 1.0 if x + rng.gauss(0, 0.3) > 0 else 0.0
            state = (x, rng.gauss(0, 1), rng.gauss(0, 1))
            steps.append(LabelledStep(f"p{p}", 0, k + 1, "", label, 1, state, -abs(rng.gauss(0, 1))))
    return steps


def test_held_out_split_is_by_problem() -> None:
    ids = [f"p{i}" for i in range(20)] * 3
    heldout = split_problems(ids, 0.25, seed=1)
    assert len(heldout) == 5 and heldout <= set(ids)
    assert split_problems(ids, 0.25, seed=1) == heldout
    assert split_problems(ids, 0.25, seed=2) != heldout
    assert len(split_problems(["a", "b"], 0.9, seed=0)) == 1  # one problem is always left to train on
    with pytest.raises(ValueError, match="at least 2 problems"):
        split_problems(["a", "a"], 0.5, seed=0)


def test_fit_probe_learns_and_reports_held_out_auc() -> None:
    steps = synthetic_steps(40, 10)
    fit = fit_probe(steps, kind="linear", epochs=200, heldout_share=0.25, seed=0)
    assert fit.train_steps + fit.heldout_steps == len(steps) and fit.heldout_steps == 100
    assert fit.heldout_auc is not None and fit.heldout_auc > 0.9
    # the baseline reads random log-probs here: near chance
    assert fit.heldout_logprob_auc is not None and abs(fit.heldout_logprob_auc - 0.5) < 0.2
    mlp = fit_probe(steps, kind="mlp", epochs=200, heldout_share=0.25, seed=0)
    assert mlp.head.kind == "mlp" and mlp.heldout_auc is not None and mlp.heldout_auc > 0.85


def test_fit_probe_reports_no_auc_when_held_out_steps_are_one_class() -> None:
    [held] = split_problems(["p0", "p1"], 0.5, seed=0)
    steps = [
        LabelledStep(**{**s.__dict__, "label": 0.0}) if s.problem_id == held else s for s in synthetic_steps(2, 5)
    ]
    fit = fit_probe(steps, heldout_share=0.5, seed=0, epochs=5)
    assert fit.heldout_ids == {held} and fit.heldout_steps == 5
    assert fit.heldout_auc is None and fit.heldout_logprob_auc is None


# --- the probe file --------------------------------------------------------------------------


def metadata(hidden_size: int = 3, model: str = "fake:fake-model", head: str = "linear") -> ProbeMetadata:
    return ProbeMetadata(
        model=model, hidden_size=hidden_size, head=head, delimiter="\n\n", task="jsonl:x", problems_train=3,
        problems_heldout=1, steps_train=30, steps_heldout=10, mean_label=0.4, positive_share=0.5, heldout_auc=0.8,
        heldout_logprob_auc=0.6, rollouts=4, continuations=4, temperature=0.7, seed=0, epochs=10, tokens=1234,
    )


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_probe_file_round_trip(tmp_path: Path, kind: str) -> None:
    steps = synthetic_steps(5, 8)
    head = train_head([s.state for s in steps], [s.label for s in steps], kind=kind, epochs=20)
    path = tmp_path / "probe.safetensors"
    save_probe(path, head, metadata(head=kind))
    loaded, meta = load_probe(path)
    states = [s.state for s in steps]
    assert loaded.probabilities(states) == pytest.approx(head.probabilities(states), abs=1e-7)
    assert meta == metadata(head=kind) and read_metadata(path) == meta
    assert (tmp_path / "probe.json").is_file() and "fake:fake-model" in (tmp_path / "probe.json").read_text()
    assert path.stat().st_size < 100_000


def test_probe_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="orchestra reward train"):
        read_metadata(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not an orchestra probe"):
        read_metadata(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_metadata(junk)
    with pytest.raises(ValueError, match="metadata says head"):
        save_probe(tmp_path / "p.safetensors", ProbeHead(3, "mlp"), metadata(head="linear"))


# --- the probe PRM, on the scripted backend ----------------------------------------------------


def prm_context(tmp_path: Path) -> Context:
    FakeBackend.script = script
    task = load_task(write_sums(tmp_path / "sums.jsonl", 1))
    handle = handle_for(StatefulFake(ModelSpec(backend="fake", model="fake-model")))
    return Context(task.problems("test")[0], "search", task, {"m": handle}, "m", 0, random.Random(0))


def saved_probe(tmp_path: Path, name: str = "probe", **meta) -> Path:
    head = ProbeHead(meta.get("hidden_size", 4), "linear")
    with torch.no_grad():
        head.layers[0].weight.copy_(torch.tensor([[0.0, -5.0, 5.0, 0.0]])[:, : head.mean.shape[0]])
        head.layers[0].bias.zero_()
    path = tmp_path / f"{name}.safetensors"
    save_probe(path, head, metadata(**{"hidden_size": 4, **meta}))
    return path


def test_probe_prm_scores_steps_from_states_it_reads(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    ctx = prm_context(tmp_path)
    spec = PRMSpec(name="probe", aggregate="min", options={"path": str(saved_probe(tmp_path))})
    steps = split_steps("good | bad | Answer: 3", "| ")
    from orchestra.techniques.process_rewards.probe import probe_reward

    scores = asyncio.run(probe_reward(ctx, spec, steps))
    # "good | " only has the good feature (+5); the longer prefixes also hold "bad" (-5)
    assert scores[0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert scores[1] == pytest.approx(0.5) and scores[2] == pytest.approx(0.5)
    assert len([c for c in FakeBackend.log.calls if c.max_tokens == 1]) == 3
    assert asyncio.run(score_steps(ctx, spec, steps)) == pytest.approx(0.5)


def test_probe_prm_uses_states_steps_already_carry(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    ctx = prm_context(tmp_path)
    spec = PRMSpec(name="probe", options={"path": str(saved_probe(tmp_path))})
    steps = [Step("x", hidden_state=(0.0, 1.0, 0.0, 0.0)), Step("y", hidden_state=(0.0, 0.0, 1.0, 0.0))]
    from orchestra.techniques.process_rewards.probe import probe_reward

    scores = asyncio.run(probe_reward(ctx, spec, steps))
    assert scores[0] < 0.01 and scores[1] > 0.99
    assert FakeBackend.log.calls == []  # nothing read from the model


def test_probe_prm_refuses_another_models_probe(fake_backend, tmp_path: Path) -> None:  # noqa: F811
    ctx = prm_context(tmp_path)
    from orchestra.techniques.process_rewards.probe import probe_reward

    wrong_model = PRMSpec(name="probe", options={"path": str(saved_probe(tmp_path, model="local:smollm2-135m-instruct"))})
    with pytest.raises(ValueError, match=r"trained on local:smollm2-135m-instruct .* is fake:fake-model"):
        asyncio.run(probe_reward(ctx, wrong_model, [Step("a | ")]))
    wrong_size = PRMSpec(name="probe", options={"path": str(saved_probe(tmp_path, "small", hidden_size=3))})
    with pytest.raises(ValueError, match="expects hidden states of size 3, got 4"):
        asyncio.run(probe_reward(ctx, wrong_size, [Step("a | ")]))
    with pytest.raises(ValueError, match="needs options.path"):
        asyncio.run(probe_reward(ctx, PRMSpec(name="probe"), [Step("a | ")]))
    with pytest.raises(FileNotFoundError, match="not found"):
        asyncio.run(probe_reward(ctx, PRMSpec(name="probe", options={"path": "nope.safetensors"}), [Step("a")]))


def test_the_shipped_probe_is_small_and_for_the_default_model() -> None:
    path = Path(__file__).parent.parent / "recipes" / "probes" / "smollm2-basic-arithmetic.safetensors"
    head, meta = load_probe(path)
    assert (meta.model, meta.hidden_size, meta.head, meta.delimiter) == ("local:smollm2-135m-instruct", 576, "mlp", "\n\n")
    assert meta.heldout_auc is not None and path.stat().st_size < 1_000_000
    assert len(head.probabilities([[0.0] * 576])) == 1
