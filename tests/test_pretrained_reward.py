"""Off-the-shelf reward models from a local Hugging Face folder (`hf_reward` scorer, `hf_prm` PRM).

The models are tiny random Llamas with a word-level tokenizer that the tests
build and save (nothing is downloaded): what is checked is the loading, the
rendering, the batching and the reading of scores, against the same model run
directly one row at a time. Scripted generator; fast.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
import torch
from fake_backend import fake_backend, write_sums  # noqa: F401  (fixture)

import orchestra
from orchestra.context import Context
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.reward import pretrained_reward
from orchestra.reward.pretrained_reward import PretrainedReward, RewardModelOptions, load_reward_model, parse_options
from orchestra.reward.process_reward import PRMSpec, Step, score_steps
from orchestra.tasks import load_task
from test_engine import traces

WORDS = [
    "[UNK]", "[PAD]", "<extra_0>", "ки", "+", "-", "<|", "|>", "system", "user", "assistant", "Please", "reason",
    "step", "by", "and", "put", "your", "final", "answer", "within", "\\", "boxed", "{", "}", ".", ":", "=",
    "Compute", "Answer", "Let", "me", "add", "the", "numbers", "so", "is", "It", "x", *map(str, range(10)),
]
TEMPLATE = "{% for m in messages %}<| {{ m['role'] }} |> {{ m['content'] }}\n{% endfor %}"
PROBLEM = "Compute 2 + 1 ="
STEPS = ["Let me add the numbers .\n\n", "2 + 1 = 3 .\n\n", "Answer : 3"]


def _tokenizer(chat_template: bool = True, words: list[str] = WORDS):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    if "<extra_0>" in words:
        tokenizer.add_tokens(["<extra_0>"], special_tokens=True)
    if chat_template:
        tokenizer.chat_template = TEMPLATE
    return tokenizer


def _save(folder: Path, model_class: str, *, labels: int = 1, seed: int = 0, chat_template: bool = True,
          words: list[str] = WORDS) -> Path:
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=words.index("[PAD]"), num_labels=labels,
        initializer_range=0.5,
    )
    getattr(transformers, model_class)(config).save_pretrained(folder)
    _tokenizer(chat_template, words).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reward_models")
    return {
        "outcome": _save(root / "outcome", "LlamaForSequenceClassification"),
        "token_head": _save(root / "token_head", "LlamaForTokenClassification", labels=2),
        "token_logits": _save(root / "token_logits", "LlamaForCausalLM", chat_template=False),
    }


def _direct(folder: Path, model_class: str, text: str) -> torch.Tensor:
    """The folder's model on one unpadded row, as transformers runs it."""
    import transformers

    model = getattr(transformers, model_class).from_pretrained(folder, dtype=torch.float32).eval()
    ids = _tokenizer()(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0].float()


def _chat(*messages: tuple[str, str]) -> str:
    return _tokenizer().apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False)


def test_outcome_scores_are_sigmoid_reward_of_the_chat_whatever_the_batch(folders) -> None:
    replies = ["It is 3 .", "Let me add the numbers . 2 + 1 = 3 so the answer is 3 .", "x"]
    model = load_reward_model(folders["outcome"])
    assert model.format == "sequence_classification" and model.is_outcome

    async def pool() -> list[float]:
        return await asyncio.gather(*(model.outcome(PROBLEM, reply) for reply in replies))

    batched = asyncio.run(pool())
    direct = [torch.sigmoid(_direct(folders["outcome"], "LlamaForSequenceClassification",
                                    _chat(("user", PROBLEM), ("assistant", r)))[0]).item() for r in replies]
    assert batched == pytest.approx(direct, abs=1e-5)
    assert len({round(s, 6) for s in batched}) == 3  # the replies are told apart


def test_token_head_prm_reads_class_one_at_each_separator(folders) -> None:
    model = load_reward_model(folders["token_head"])
    assert model.format == "token_head" and model.separator == "<extra_0>"
    scores = asyncio.run(model.steps(PROBLEM, STEPS))
    reply = "".join(f"{s.strip()}<extra_0>" for s in STEPS)
    text = _chat(("system", pretrained_reward._QWEN_PRM_SYSTEM), ("user", PROBLEM), ("assistant", reply))
    logits = _direct(folders["token_head"], "LlamaForTokenClassification", text)
    ids = _tokenizer()(text, add_special_tokens=False)["input_ids"]
    at = [i for i, t in enumerate(ids) if t == WORDS.index("<extra_0>")]
    assert scores == pytest.approx(torch.softmax(logits[at], -1)[:, 1].tolist(), abs=1e-5)
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    # causal: a step's score does not depend on the steps after it
    assert asyncio.run(model.steps(PROBLEM, STEPS[:2])) == pytest.approx(scores[:2], abs=1e-5)


def test_token_logits_prm_reads_good_against_bad_at_each_step_tag(folders) -> None:
    model = load_reward_model(folders["token_logits"])
    assert model.format == "token_logits" and not model.chat and model.separator == "ки"
    scores = asyncio.run(model.steps(PROBLEM, STEPS))
    text = PROBLEM + " " + "\n".join(f"{s.strip()} ки" for s in STEPS)
    logits = _direct(folders["token_logits"], "LlamaForCausalLM", text)
    ids = _tokenizer()(text, add_special_tokens=False)["input_ids"]
    at = [i for i, t in enumerate(ids) if t == WORDS.index("ки")]
    good_bad = [WORDS.index("+"), WORDS.index("-")]
    assert scores == pytest.approx(torch.softmax(logits[at][:, good_bad], -1)[:, 0].tolist(), abs=1e-5)
    assert asyncio.run(model.steps(PROBLEM, STEPS[:1])) == pytest.approx(scores[:1], abs=1e-5)


@pytest.mark.parametrize(("batch_size", "forwards"), [(8, 1), (2, 3)])
def test_concurrent_requests_share_forward_passes(folders, monkeypatch, batch_size: int, forwards: int) -> None:
    model = PretrainedReward(folders["token_head"].resolve(), RewardModelOptions(batch_size=batch_size))
    calls: list[int] = []
    run = model._run
    monkeypatch.setattr(model._batches, "_run", lambda batch: calls.append(len(batch)) or run(batch))
    prefixes = [STEPS[:k] for k in (1, 2, 3, 1, 2)]

    async def together() -> list[list[float]]:
        return await asyncio.gather(*(model.steps(PROBLEM, p) for p in prefixes))

    together_scores = asyncio.run(together())
    assert len(calls) == forwards and sum(calls) == len(prefixes)
    alone = [asyncio.run(model.steps(PROBLEM, p)) for p in prefixes]
    for got, expected in zip(together_scores, alone):
        assert got == pytest.approx(expected, abs=1e-5)


def _bon_recipe(folder: Path) -> Recipe:
    return Recipe.model_validate({
        "name": "bon", "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": 4}},
            {"id": "best", "technique": "best_of_n", "inputs": ["samples"], "params": {"scorer": f"hf_reward:{folder}"}},
        ],
        "output": "best",
    })


def test_best_of_n_with_a_reward_model_keeps_the_highest_reward(tmp_path: Path, fake_backend, folders) -> None:
    out, spec = tmp_path / "run", write_sums(tmp_path / "s.jsonl", 1)
    orchestra.run(_bon_recipe(folders["outcome"]), spec, out=out, cache=False)
    samples = traces(out)[("p0", "samples")]["outputs"]
    best = traces(out)[("p0", "best")]["outputs"][0]
    model, prompt = load_reward_model(folders["outcome"]), load_task(spec).problems("test")[0].prompt
    rewards = [asyncio.run(model.outcome(prompt, s["text"])) for s in samples]
    assert len(set(rewards)) == len(rewards)
    assert best["text"] == samples[rewards.index(max(rewards))]["text"]
    assert best["scores"][f"hf_reward:{folders['outcome']}"] == pytest.approx(max(rewards), abs=1e-6)


def test_a_search_runs_on_the_hf_prm(tmp_path: Path, fake_backend, folders) -> None:
    fake_backend.script = lambda request, prompt, index: "Answer: 3" if prompt.count("numbers") else "Let me add the numbers ;"
    recipe = Recipe.model_validate({
        "name": "pf", "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "search", "technique": "particle_filtering", "params": {
            "delimiter": ";", "step_tokens": 8, "max_steps": 4, "rollouts": 3,
            "prm": {"name": "hf_prm", "aggregate": "min", "options": {"path": str(folders["token_logits"])}}}}],
    })
    out = tmp_path / "run"
    result = orchestra.run(recipe, write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    assert result.results[0].status == "ok"
    outputs = traces(out)[("p0", "search")]["outputs"]
    assert outputs and all(0 < o["scores"]["prm"] < 1 for o in outputs)


def _context() -> Context:
    return Context(Problem.from_prompt("p0", PROBLEM), "search", None, {}, None, seed=0, rng=random.Random(0))


def test_prm_spec_options_reach_the_model(folders) -> None:
    spec = PRMSpec(name="hf_prm", aggregate="mean", options={"path": str(folders["token_head"]), "batch_size": 3})
    mean = asyncio.run(score_steps(_context(), spec, [Step(text=s) for s in STEPS]))
    scores = asyncio.run(load_reward_model(folders["token_head"], RewardModelOptions(batch_size=3)).steps(PROBLEM, STEPS))
    assert mean == pytest.approx(sum(scores) / 3)


def test_wrong_uses_and_unfit_folders_fail_with_a_clear_message(tmp_path: Path, folders) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_reward_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="one output"):
        load_reward_model(_save(tmp_path / "two_labels", "LlamaForSequenceClassification", labels=2))
    with pytest.raises(ValueError, match="chat template"):
        load_reward_model(_save(tmp_path / "no_template", "LlamaForSequenceClassification", chat_template=False))
    without_tag = [w for w in WORDS if w != "ки"]
    with pytest.raises(ValueError, match="not in its vocabulary"):
        load_reward_model(_save(tmp_path / "no_tag", "LlamaForCausalLM", chat_template=False, words=without_tag))
    with pytest.raises(ValueError, match="use it as a process reward model"):
        asyncio.run(load_reward_model(folders["token_head"]).outcome(PROBLEM, "x"))
    with pytest.raises(ValueError, match="use it as a scorer"):
        asyncio.run(load_reward_model(folders["outcome"]).steps(PROBLEM, STEPS))
    with pytest.raises(ValueError, match="found 3 step separators .* for 2 steps"):
        asyncio.run(load_reward_model(folders["token_logits"]).steps(PROBLEM, ["2 ки 3", "4"]))
    with pytest.raises(ValueError, match="hf_prm options: batch_sise"):
        parse_options({"batch_sise": 2}, "hf_prm options")
    remote = _save(tmp_path / "remote", "LlamaForTokenClassification", labels=2)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_prm.PRM"}}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_reward_model(remote)
    with pytest.raises(ValueError, match="needs options.path"):
        asyncio.run(score_steps(_context(), PRMSpec(name="hf_prm"), [Step(text="x")]))
