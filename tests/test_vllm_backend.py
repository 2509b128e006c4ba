"""The `vllm` backend's control flow, with a stand-in `vllm` module (vLLM needs a GPU).

The stand-in records what the backend builds (engine arguments, SamplingParams,
the batches given to `LLM.generate`) and answers in vLLM's output shapes, so
these tests check the translation both ways; they cannot check vLLM itself.
"""

from __future__ import annotations

import asyncio
import math
import sys
import types
from dataclasses import dataclass, field

import pytest

import orchestra
from fake_backend import correct_answer, write_sums
from orchestra.backends import base as backends_base
from orchestra.backends import BackendUnavailable, GenerationRequest
from orchestra.errors import RecipeError
from orchestra.problem import Message
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[dict[int, Logprob]] | None


@dataclass
class RequestOutput:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class Tokenizer:
    chat_template = "plain"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, continue_final_message=False):
        turns = [f"<{m['role']}>{m['content']}</>" for m in messages]
        if continue_final_message:
            turns[-1] = turns[-1].removesuffix("</>")
        return "".join(turns) + ("<assistant>" if add_generation_prompt else "")

    def decode(self, ids):
        return "".join(f"t{i}" for i in ids)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


@dataclass
class LLM:
    """Records its arguments and every generate call; answers sums like fake_backend, off by
    the seed mod 3 when sampling (so samples with different seeds differ)."""

    kwargs: dict
    calls: list[tuple[list[str], list[SamplingParams]]] = field(default_factory=list)
    seen_prompts: set[str] = field(default_factory=set)
    instances = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.seen_prompts = kwargs, [], set()
        LLM.instances.append(self)

    def get_tokenizer(self):
        return Tokenizer()

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), list(sampling_params)))
        outputs = []
        for prompt, params in zip(prompts, sampling_params):
            samples = []
            for i in range(params.n):
                answer = correct_answer(prompt) + (params.seed % 3 if params.temperature > 0 else 0) + i
                words = ["The", "answer", "is", str(answer)][: params.max_tokens]
                ids = [100 + j for j in range(len(words))]
                steps = None
                if params.logprobs is not None:
                    steps = [{token: Logprob(-0.25 * (j + 1)), 7: Logprob(-9.0)} for j, token in enumerate(ids)]
                reason = "length" if len(words) == params.max_tokens else "stop"
                samples.append(CompletionOutput(i, " ".join(words), ids, reason, steps))
            cached = len(prompt.split()) if prompt in self.seen_prompts else 0
            self.seen_prompts.add(prompt)
            outputs.append(RequestOutput(prompt, list(range(len(prompt.split()))), samples, cached))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    LLM.instances = []
    backends_base._LOADED.clear()
    yield module
    backends_base._LOADED.clear()


def spec(**vllm_options) -> ModelSpec:
    return ModelSpec(backend="vllm", model="org/some-model", vllm=vllm_options or None)


def test_engine_arguments_pass_through(fake_vllm):
    from orchestra.backends.vllm_offline import VLLMBackend

    speculative = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}
    VLLMBackend(spec(speculative_config=speculative, max_model_len=2048, engine_args={"enforce_eager": True}))
    [llm] = LLM.instances
    assert llm.kwargs == {
        "model": "org/some-model",
        "dtype": "auto",  # not ModelSpec's CPU default of float32
        "enable_prefix_caching": True,
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
        "seed": 0,
        "max_model_len": 2048,
        "speculative_config": speculative,
        "enforce_eager": True,
    }
    VLLMBackend(ModelSpec(backend="vllm", model="org/other", dtype="bfloat16"))
    assert LLM.instances[1].kwargs["dtype"] == "bfloat16" and "speculative_config" not in LLM.instances[1].kwargs


def test_concurrent_requests_are_one_generate_call(fake_vllm):
    from orchestra.backends.vllm_offline import VLLMBackend

    backend = VLLMBackend(spec())
    ask = [
        GenerationRequest(messages=(Message(role="user", content="Compute 2 + 3 ="),), n=3, seed=9, logprobs=True,
                          temperature=0.8, top_k=0, stop=("\n",), max_tokens=16),
        GenerationRequest(prompt="Compute 10 + 1 = ", n=1, max_tokens=2),
    ]

    async def both():
        return await asyncio.gather(*(backend.generate(r) for r in ask))

    first, second = asyncio.run(both())
    [llm] = LLM.instances
    [(prompts, params)] = llm.calls  # one vLLM request per sample
    assert prompts == ["<user>Compute 2 + 3 =</><assistant>"] * 3 + ["Compute 10 + 1 = "]
    for p in params[:3]:
        assert (p.n, p.temperature, p.top_k, p.stop, p.max_tokens, p.logprobs) == (1, 0.8, -1, ["\n"], 16, 0)
    seeds = [p.seed for p in params[:3]]
    assert seeds == [ask[0].sample_seed(i) for i in range(3)] and len(set(seeds)) == 3  # a stream per sample
    assert params[3].logprobs is None and params[3].seed is None
    assert [c.text for c in first.completions] == [f"The answer is {5 + seed % 3}" for seed in seeds]
    assert first.completions[0].logprobs == (-0.25, -0.5, -0.75, -1.0)  # the sampled token's, not the runner-up's
    assert first.completions[0].completion_tokens == 4 and first.completions[0].finish_reason == "stop"
    assert second.completions[0].text == "The answer" and second.completions[0].finish_reason == "length"
    assert second.completions[0].logprobs is None
    assert first.prompt_tokens == 5 and first.usage.completion_tokens == 12  # "<user>Compute 2 + 3 =</><assistant>"


def test_an_assistant_turn_is_continued_and_top_tokens_are_mapped(fake_vllm):
    from orchestra.backends.vllm_offline import VLLMBackend

    backend = VLLMBackend(spec())
    request = GenerationRequest(
        messages=(Message(role="user", content="Compute 2 + 3 ="), Message(role="assistant", content="It is")),
    )
    assert backend.render(request) == "<user>Compute 2 + 3 =</><assistant>It is"  # no new turn opened

    @dataclass
    class Ranked:
        logprob: float
        decoded_token: str | None

    step = {5: Ranked(-0.5, " yes"), 6: Ranked(-1.5, " Yes"), 7: Ranked(-1.5, " yes"), 8: Ranked(-4.0, None)}
    top = backend._top_map(step, 3)
    assert set(top) == {" yes", " Yes"}  # the 4th most likely is left out; same-text tokens merged
    assert top[" yes"] == pytest.approx(math.log(math.exp(-0.5) + math.exp(-1.5)))
    assert backend._top_map(step, 4)["t8"] == -4.0  # no decoded text: the tokenizer decodes it


def test_a_recipe_runs_on_the_vllm_backend(fake_vllm, tmp_path):
    task = write_sums(tmp_path / "sums.jsonl", 5)
    recipe = Recipe.model_validate(
        {
            "name": "vllm-greedy",
            "models": {"m": {"backend": "vllm", "model": "org/some-model", "vllm": {"enable_prefix_caching": True}}},
            "nodes": [{"id": "answer", "technique": "sample", "params": {"n": 1, "temperature": 0, "max_tokens": 8}}],
        }
    )
    result = orchestra.run(recipe, task, cache=False)
    assert result.accuracy == 1.0 and result.summary.usage.completion_tokens == 5 * 4
    [llm] = LLM.instances
    assert sum(len(prompts) for prompts, _ in llm.calls) == 5


def test_samples_are_seeded_by_their_own_index(fake_vllm):
    """Sample k of a request for samples 2.. is sample 2 + k of a request for samples 0..: a
    larger pool extends a smaller one, as on the local engine."""
    from orchestra.backends.vllm_offline import VLLMBackend

    backend = VLLMBackend(spec())
    whole = GenerationRequest(prompt="Compute 1 + 1 = ", n=5, seed=4, temperature=1.0)
    tail = whole.model_copy(update={"n": 3, "first_index": 2})
    assert [p.seed for p in backend.sampling_params(tail)] == [p.seed for p in backend.sampling_params(whole)][2:]
    other = whole.model_copy(update={"seed": 5})
    assert [p.seed for p in backend.sampling_params(other)] != [p.seed for p in backend.sampling_params(whole)]


def test_every_setting_that_changes_samples_is_in_the_cache_key():
    key = spec().key()
    assert key.startswith("vllm:org/some-model:auto:")  # vLLM's own dtype choice, not ModelSpec's CPU default
    different = [
        spec(engine_args={"quantization": "fp8"}),
        spec(engine_args={"quantization": "awq"}),
        spec(speculative_config={"method": "ngram", "num_speculative_tokens": 4}),
        spec(seed=1),
        spec(tensor_parallel_size=2),
        ModelSpec(backend="vllm", model="org/some-model", dtype="bfloat16"),
        ModelSpec(backend="vllm", model="org/other"),
    ]
    keys = [s.key() for s in different]
    assert key not in keys and len(set(keys)) == len(keys)
    neutral = spec(gpu_memory_utilization=0.5, max_model_len=1024, enable_prefix_caching=False)
    assert neutral.key() == key


def test_vllm_options_are_validated():
    with pytest.raises(RecipeError, match="own field"):
        Recipe.model_validate(
            {"name": "r", "models": {"m": {"backend": "vllm", "vllm": {"engine_args": {"seed": 3}}}},
             "nodes": [{"id": "a", "technique": "sample"}]}
        )
    with pytest.raises(RecipeError, match="less than or equal to 1"):
        Recipe.model_validate(
            {"name": "r", "models": {"m": {"backend": "vllm", "vllm": {"gpu_memory_utilization": 1.5}}},
             "nodes": [{"id": "a", "technique": "sample"}]}
        )


def test_without_vllm_the_message_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets when it is not installed
    from orchestra.backends.vllm_offline import VLLMBackend

    with pytest.raises(BackendUnavailable, match=r"pip install 'orchestra\[vllm\]'"):
        VLLMBackend(spec())

    from typer.testing import CliRunner

    from orchestra.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodels: {m: {backend: vllm, model: org/x}}\nnodes: [{id: a, technique: sample}]\n")
    backends_base._LOADED.clear()
    outcome = CliRunner().invoke(app, ["run", str(recipe), "--limit", "1", "--no-cache", "--out", str(tmp_path / "o")])
    assert outcome.exit_code == 2 and "orchestra[vllm]" in outcome.output


def test_a_thinking_maximum_becomes_vllms_thinking_token_budget(fake_vllm):
    from orchestra.backends import ThinkingBudget
    from orchestra.backends.vllm_offline import VLLMBackend

    backend = VLLMBackend(spec())
    bounded = GenerationRequest(prompt="Compute 1 + 1 = ", n=2, thinking=ThinkingBudget(max_tokens=32))
    assert [p.thinking_token_budget for p in backend.sampling_params(bounded)] == [32, 32]
    assert not hasattr(backend.sampling_params(bounded.model_copy(update={"thinking": None}))[0], "thinking_token_budget")
    with pytest.raises(ValueError, match="budget forcing"):
        backend.sampling_params(bounded.model_copy(update={"thinking": ThinkingBudget(min_tokens=4)}))


def test_a_response_format_or_forced_tool_call_becomes_vllm_structured_outputs(fake_vllm, monkeypatch):
    """vLLM >= 0.11 takes `structured_outputs=StructuredOutputsParams(json=schema)`; a forced tool
    call's JSON comes back wrapped in its <tool_call> block."""
    from orchestra.backends.vllm_offline import VLLMBackend

    params_module = types.ModuleType("vllm.sampling_params")
    params_module.StructuredOutputsParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params_module)
    backend = VLLMBackend(spec())
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    request = GenerationRequest(prompt="Compute 1 + 1 = ", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    [params] = backend.sampling_params(request)
    assert params.structured_outputs.json == schema
    assert not hasattr(backend.sampling_params(GenerationRequest(prompt="hi"))[0], "structured_outputs")

    tool = {"type": "function", "function": {"name": "add", "parameters": schema}}
    forced = GenerationRequest(prompt="Compute 1 + 1 = ", tools=(tool,), tool_choice="required")
    [params] = backend.sampling_params(forced)
    assert params.structured_outputs.json["properties"]["name"] == {"const": "add"}
    text = asyncio.run(backend.generate(forced)).completions[0].text
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
