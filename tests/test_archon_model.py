"""The LLM components end to end on the real default model: one problem, few short samples each."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

import orchestra
from orchestra import Node, Recipe
from orchestra.backends import GenerationRequest
from orchestra.backends import get_backend
from orchestra.problem import Message
from orchestra.backends import ModelSpec

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"
SMALL = {"small": ModelSpec(dtype="float32")}
SAMPLES = Node(id="samples", technique="sample", params={"n": 3, "temperature": 0.7, "max_tokens": 32})


def run_nodes(tmp_path: Path, *nodes: Node) -> dict[str, dict]:
    """Run samples -> nodes on one problem; the trace of each node by id."""
    recipe = Recipe(name="archon-part", models=SMALL, nodes=[SAMPLES, *nodes])
    result = orchestra.run(recipe, TASK, limit=1, cache=False, out=tmp_path / "run")
    (problem,) = result.results
    assert problem.status == "ok", problem.error
    traces = [json.loads(line) for line in (tmp_path / "run/trace.jsonl").read_text().splitlines()]
    return {t["node"]: t for t in traces}


def test_local_backend_reports_top_logprobs_and_continues_an_assistant_turn() -> None:
    backend = get_backend(ModelSpec(model="smollm2-135m-instruct", dtype="float32"))
    messages = (
        Message(role="user", content="Is 2 + 2 = 4? Answer Yes or No."),
        Message(role="assistant", content="Verdict:"),
    )
    request = GenerationRequest(messages=messages, max_tokens=3, temperature=0.0, logprobs=True, top_logprobs=5)
    assert backend.render(request).endswith("<|im_start|>assistant\nVerdict:")  # continued, no new turn
    (completion,) = asyncio.run(backend.generate(request)).completions
    assert completion.top_logprobs is not None and len(completion.top_logprobs) == completion.completion_tokens
    for position, (top, chosen) in enumerate(zip(completion.top_logprobs, completion.logprobs or ())):
        assert 1 <= len(top) <= 5 and all(v <= 0.0 for v in top.values())
        assert max(top.values()) == pytest.approx(chosen, abs=1e-4)  # greedy picks the likeliest token
        assert sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-4
    first = max(completion.top_logprobs[0], key=completion.top_logprobs[0].__getitem__)
    assert completion.text.startswith(first)


def test_critic_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(tmp_path, Node(id="critique", technique="critic", inputs=["samples"], params={"max_tokens": 32}))
    samples, critiqued = traces["samples"]["outputs"], traces["critique"]["outputs"]
    assert [c["id"] for c in critiqued] == [c["id"] for c in samples]
    assert any(c["critiques"] for c in critiqued)
    for c in critiqued:
        assert set(c["critiques"]) <= {c["id"]} and all(text.strip() for text in c["critiques"].values())


def test_rank_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(tmp_path, Node(id="ranked", technique="rank", inputs=["samples"], params={"top_k": 2}))
    ranked = traces["ranked"]["outputs"]
    assert len(ranked) == 2 and [c["scores"]["rank"] for c in ranked] == [1.0, 0.5]
    assert ranked[0]["scores"]["rank_fallback"] in (0.0, 1.0)
    assert {c["id"] for c in ranked} <= {c["id"] for c in traces["samples"]["outputs"]}


def test_fuse_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(tmp_path, Node(id="fused", technique="fuse", inputs=["samples"], params={"max_tokens": 32}))
    (fused,) = traces["fused"]["outputs"]
    assert fused["text"].strip() and fused["completion_tokens"] <= 32
    assert fused["parents"] == [c["id"] for c in traces["samples"]["outputs"]]


def test_verify_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(tmp_path, Node(id="checked", technique="verify", inputs=["samples"], params={"max_tokens": 32}))
    scores = [c["scores"]["verify"] for c in traces["checked"]["outputs"]]
    assert len(scores) == 3
    # a real next-token distribution after "Verdict:" has Yes and No among its top 20
    assert all(0.0 < s < 1.0 and s != 0.5 for s in scores)
    assert traces["checked"]["usage"]["calls"] == 6  # reasoning, then the verdict token, per candidate


def test_llm_judge_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(tmp_path, Node(id="pick", technique="best_of_n", inputs=["samples"], params={"scorer": "llm_judge"}))
    (best,) = traces["pick"]["outputs"]
    assert 0.0 < best["scores"]["llm_judge"] < 1.0 and best["scores"]["llm_judge"] != 0.5
    assert traces["pick"]["usage"]["completion_tokens"] == 3  # one verdict token per candidate


def test_refine_on_the_real_model(tmp_path: Path) -> None:
    traces = run_nodes(
        tmp_path,
        Node(id="refined", technique="refine", inputs=["samples"],
             params={"rounds": 1, "max_tokens": 32, "feedback_max_tokens": 32}),
    )
    refined = traces["refined"]["outputs"]
    assert len(refined) == 3 and all(c["scores"]["refine_rounds"] in (0.0, 1.0) for c in refined)
    samples = {c["id"] for c in traces["samples"]["outputs"]}
    for c in refined:  # either the sample itself (feedback said correct) or its rewrite
        assert c["id"] in samples if c["scores"]["refine_rounds"] == 0 else c["parents"][0] in samples
        assert len(c["critiques"]) == 1


def test_pdr_on_the_real_model(tmp_path: Path) -> None:
    recipe = Recipe(
        name="pdr-part",
        models=SMALL,
        nodes=[Node(id="pdr", technique="pdr", params={
            "rounds": 1, "drafts": 2, "draft_max_tokens": 32, "workspace_max_tokens": 32, "max_tokens": 32})],
    )
    result = orchestra.run(recipe, TASK, limit=1, cache=False)
    (problem,) = result.results
    assert problem.status == "ok" and problem.text
    assert problem.usage.calls == 3  # drafts, distill, final answer
