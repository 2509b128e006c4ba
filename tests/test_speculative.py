"""Speculative decoding on the real default model (fp32, CPU): lossless, token for token.

Every drafter must reproduce plain greedy decoding exactly on 20 prompts —
repetitive ones where drafts run long, and short answers that end (EOS) inside
a draft. Seeded sampling with matching acceptance must reproduce plain seeded
sampling too.
"""

from __future__ import annotations

import pytest
import torch

from orchestra.backends.local_engine import EngineConfig, InferenceEngine, SamplingParams
from orchestra.backends.local_engine.kv_pool import KVPool
from orchestra.backends.local_engine.llama_runner import LlamaRunner, PrefillRow
from orchestra.backends.local_engine.options import SpeculativeOptions
from orchestra.backends.local_engine.speculative.draft_tree import DraftTree, ancestor_mask
from orchestra.backends.local_engine.speculative.token_recycling import TokenRecyclingDrafter, tree_template
from orchestra.models import load_pretrained
from orchestra.backends import ModelSpec

pytestmark = pytest.mark.model

PASSAGE = (
    "The lighthouse on Gull Rock was built in 1871. Its lamp burned whale oil until 1902, "
    "then kerosene, and was electrified in 1938. The last keeper, Ada Finch, left in 1961."
)
PROMPTS = [
    # Grounded and repetitive: long drafts get accepted.
    f"Repeat this text exactly: {PASSAGE}",
    f"Copy the first sentence of this text: {PASSAGE}",
    f"{PASSAGE}\nWhen was the lamp electrified? Answer with a sentence from the text.",
    f"{PASSAGE}\nWho was the last keeper?",
    "Repeat exactly: The cat sat on the mat near the door.",
    "Repeat exactly: one two three four five six seven eight.",
    "Say 'hello world' three times.",
    "Write the word banana five times, separated by commas.",
    "Count from 1 to 20.",
    "Repeat after me: to be or not to be, that is the question.",
    # Short answers: EOS comes early, often inside a draft.
    "Answer with one word: what color is the sky?",
    "What is 2 + 2? Reply with the number only.",
    "Is water wet? Answer yes or no.",
    "Name a color.",
    "What is the capital of France?",
    # Free generation.
    "Write a haiku about the sea.",
    "Explain what a prime number is in one sentence.",
    "Give me three tips for sleeping well.",
    "Describe a cat in five words.",
    "Translate 'good morning' into French.",
]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def loaded():
    return load_pretrained("smollm2-135m-instruct", "float32")


def encode(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def prompts(loaded):
    return [encode(loaded[1], p) for p in PROMPTS]


@pytest.fixture(scope="module")
def plain(loaded):
    engine = InferenceEngine(*loaded, EngineConfig(prefix_cache_bytes=0))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def plain_greedy(plain, prompts):
    futures = [plain.submit(ids, SamplingParams(max_tokens=NEW_TOKENS))[0] for ids in prompts]
    return [f.result().token_ids for f in futures]


class _Recording:
    """Wraps a drafter and keeps every tree it proposed."""

    def __init__(self, inner):
        self.inner, self.trees = inner, []
        self.samples, self.max_nodes = inner.samples, inner.max_nodes

    def propose(self, context, sampling, stream):
        tree = self.inner.propose(context, sampling, stream)
        self.trees.append(tree)
        return tree

    def observe(self, tree, logits, verdict):
        self.inner.observe(tree, logits, verdict)

    def finish(self):
        self.inner.finish()


CONFIGS = {
    "prompt_lookup": SpeculativeOptions(method="prompt_lookup", draft_tokens=8),
    "token_recycling": SpeculativeOptions(method="token_recycling"),
    "layer_skip": SpeculativeOptions(method="draft_model", draft="layer_skip", draft_options={"layers": 10}),
    # The draft is a second copy of the target: checks 100% acceptance (on fewer prompts, it costs double).
    "draft_is_target": SpeculativeOptions(method="draft_model", draft="model", draft_options={"model": "smollm2-135m-instruct"}),
}
PROMPTS_CHECKED = {"draft_is_target": 6}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_drafter_reproduces_plain_greedy_on_20_prompts(name, loaded, prompts, plain_greedy):
    engine = InferenceEngine(*loaded, EngineConfig(prefix_cache_bytes=0), speculative=CONFIGS[name])
    recorder = _Recording(engine.speculative.drafter)
    engine.speculative.drafter = recorder
    count = PROMPTS_CHECKED.get(name, len(prompts))
    prompts, plain_greedy = prompts[:count], plain_greedy[:count]
    try:
        for ids, expected in zip(prompts, plain_greedy):  # one at a time: the batch-1 path
            got = engine.generate(ids, SamplingParams(max_tokens=NEW_TOKENS))[0]
            assert got.token_ids == expected, PROMPTS[prompts.index(ids)]
    finally:
        engine.close()
    stats = engine.speculative.stats
    total = sum(len(t) for t in plain_greedy)
    assert stats.emitted_tokens >= total - len(prompts)  # every decode step after the first went through speculation
    assert stats.rounds < stats.emitted_tokens  # some drafts were kept
    eos = engine.stops.eos_ids
    if name == "prompt_lookup":
        # Copying the prompt drafts its end-of-turn token too: outputs stayed exact with EOS inside drafts.
        assert any(t in eos for tree in recorder.trees for t in tree.tokens[1:-1])
        assert stats.mean_accepted_length > 1.5
    if name == "draft_is_target":
        assert stats.accepted_tokens == stats.drafted_tokens  # the draft is the target: everything is kept


def test_sparse_self_drafting_is_lossless(loaded, prompts, plain_greedy, tmp_path, monkeypatch):
    """The model with TEAL-sparse MLPs drafts, the dense model verifies: plain greedy output."""
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))  # thresholds calibrated afresh, stored here
    options = SpeculativeOptions(method="draft_model", draft="sparse", draft_options={"sparsity": 0.5})
    engine = InferenceEngine(
        *loaded, EngineConfig(prefix_cache_bytes=0), speculative=options, model_name="smollm2-135m-instruct"
    )
    try:
        for ids, expected in zip(prompts[:6], plain_greedy[:6]):
            assert engine.generate(ids, SamplingParams(max_tokens=NEW_TOKENS))[0].token_ids == expected
    finally:
        engine.close()
    stats = engine.speculative.stats
    assert 0 < stats.accepted_tokens < stats.drafted_tokens  # a different, cheaper model: some drafts kept, not all


def test_tree_forward_logits_equal_the_chain_along_each_path(loaded, prompts):
    model, _ = loaded
    runner = LlamaRunner(model)
    pool = KVPool(layers=runner.num_layers, kv_heads=runner.kv_heads, head_dim=runner.head_dim,
                  dtype=runner.dtype, device=runner.device, byte_limit=1 << 28)
    prefix = prompts[0]
    tree = DraftTree(tokens=(prefix[-1], 504, 260, 1100, 33, 2010, 77, 9), parents=(-1, 0, 0, 1, 1, 2, 3, 6))
    start = len(prefix) - 1
    with torch.inference_mode():
        pool.reserve(2, len(prefix) + len(tree) + 8)
        runner.prefill(pool, [PrefillRow(0, 0, tuple(prefix[:-1]))])
        depths = torch.tensor(tree.depths())
        logits = runner.forward_tree(pool, 0, start, torch.tensor(tree.tokens), depths + start, ancestor_mask(tree.parents))
        for node in range(len(tree)):
            path = [tree.tokens[i] for i in tree.path_to(node)]
            chain, _ = runner.prefill(pool, [PrefillRow(1, 0, tuple(prefix[:-1]) + tuple(path))])
            assert torch.allclose(logits[node], chain[0], atol=1e-3), node
            assert int(logits[node].argmax()) == int(chain[0].argmax())


@pytest.mark.parametrize("method", ["prompt_lookup", "token_recycling"])
def test_seeded_sampling_with_matching_acceptance_equals_plain_sampling(method, loaded, prompts, plain):
    engine = InferenceEngine(*loaded, EngineConfig(prefix_cache_bytes=0), speculative=SpeculativeOptions(method=method))
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=16)
    try:
        for seed, ids in enumerate(prompts[:4]):
            expected = plain.generate(ids, params, seed=seed)[0].token_ids
            assert engine.generate(ids, params, seed=seed)[0].token_ids == expected
    finally:
        engine.close()
    assert engine.speculative.stats.accepted_tokens > 0


def test_rejection_sampling_with_the_target_as_draft_keeps_almost_everything(loaded, prompts):
    config = SpeculativeOptions(method="draft_model", draft="model", draft_options={"model": "smollm2-135m-instruct"},
                               acceptance="rejection", initial_draft_tokens=4, adaptive=False)
    engine = InferenceEngine(*loaded, EngineConfig(prefix_cache_bytes=0), speculative=config)
    try:
        outputs = [engine.generate(ids, SamplingParams(temperature=1.0, max_tokens=12), seed=3)[0] for ids in prompts[:2]]
    finally:
        engine.close()
    stats = engine.speculative.stats
    assert all(o.token_ids for o in outputs)
    assert stats.accepted_tokens >= 0.95 * stats.drafted_tokens  # q == p up to rounding


def test_batched_decoding_is_untouched_when_several_sequences_run(loaded, prompts, plain_greedy):
    engine = InferenceEngine(*loaded, EngineConfig(prefix_cache_bytes=0), speculative=SpeculativeOptions(method="prompt_lookup"))
    try:
        with engine.together():
            futures = [engine.submit(ids, SamplingParams(max_tokens=NEW_TOKENS))[0] for ids in prompts[:3]]
        got = [f.result().token_ids for f in futures]
    finally:
        engine.close()
    assert got == plain_greedy[:3]
    # Only the last survivor (alone in the batch) may have speculated.
    assert engine.speculative.stats.emitted_tokens <= max(len(t) for t in plain_greedy[:3])


def test_recipe_options_reach_the_engine_and_the_cache_key(loaded):
    options = SpeculativeOptions(method="token_recycling", tree_widths=(3, 2, 1), top_k=4)
    engine = InferenceEngine(*loaded, speculative=options)
    drafter = engine.speculative.drafter
    assert isinstance(drafter, TokenRecyclingDrafter) and drafter.top_k == 4
    assert drafter.template == tree_template((3, 2, 1), 2)
    assert engine.scheduler.lookahead == len(drafter.template) + 1  # KV room for the whole tree
    assert ModelSpec(speculative=options).key() == ModelSpec().key()  # lossless seed for seed: cache shared
    rejection = ModelSpec(speculative=SpeculativeOptions(method="draft_model", acceptance="rejection"))
    assert rejection.key() != ModelSpec().key()
    with pytest.raises(ValueError):
        SpeculativeOptions(method="prompt_lookup", acceptance="rejection")
    with pytest.raises(ValueError):
        SpeculativeOptions(method="prompt_lookup", min_ngram=4, max_ngram=2)
    with pytest.raises(ValueError):
        ModelSpec(backend="vllm", speculative=SpeculativeOptions(method="prompt_lookup"))
