"""Runs a recipe's DAG over many problems at once, on shared backends.

Problems run concurrently (bounded by `concurrency`), and within a problem the
nodes of one execution layer run concurrently, so a backend always has many
requests to batch. A failing node or an exhausted budget ends its own problem
only; every finished problem is written out the moment it finishes. A run is
`complete` when no problem is left to do: none failed and none was interrupted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import traceback
from collections.abc import Callable

from orchestra.backends import get_backend
from orchestra.budget import BudgetExceeded, Limits, Meter
from orchestra.cache import GenerationCache
from orchestra.candidate import Candidate
from orchestra.context import Context, Ledger, ModelHandle
from orchestra.graph import execution_layers
from orchestra.metrics import is_correct
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunResult, RunSummary
from orchestra.run_folder import RunFolder
from orchestra.streaming import current_listener
from orchestra.tasks import Task
from orchestra.usage import Usage
from orchestra.technique import get_technique

def node_seed(recipe_seed: int, problem_id: str, node_id: str) -> int:
    """Stable across processes (unlike hash()), so reruns hit the generation cache."""
    digest = hashlib.sha256(f"{recipe_seed}/{problem_id}/{node_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


async def _all_or_nothing(coroutines: list) -> list:
    """Like gather, but the first failure cancels the siblings (and waits for them), so a
    failed or budget-refused node leaves nothing running that its problem no longer reports."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Executor:
    """Executes one recipe; `run` may be called for several problem lists."""

    def __init__(
        self,
        recipe: Recipe,
        *,
        task: Task | None = None,
        cache: GenerationCache | None = None,
        folder: RunFolder | None = None,
        concurrency: int = 32,
    ):
        self.recipe = recipe
        self.task = task
        self.cache = cache
        self.folder = folder
        self.concurrency = max(1, concurrency)
        self.layers = execution_layers(recipe)
        self.backends = {alias: get_backend(spec) for alias, spec in recipe.models.items()}
        self.run_meter = Meter("per-run", recipe.budget.per_run)  # replaced at each run()

    async def run(
        self,
        problems: list[Problem],
        *,
        split: str | None = None,
        on_result: Callable[[ProblemResult], None] | None = None,
    ) -> RunResult:
        started = time.monotonic()
        self.run_meter = Meter("per-run", self.recipe.budget.per_run)
        busy_before = self._model_seconds()
        done = self.folder.finished() if self.folder else {}
        results: dict[str, ProblemResult] = {}
        for problem in problems:
            if problem.id in done:
                results[problem.id] = done[problem.id]
                # a resumed run's per-run budget includes what the finished problems spent
                self.run_meter.used = self.run_meter.used + done[problem.id].usage
                if on_result:
                    on_result(done[problem.id])
        gate = asyncio.Semaphore(self.concurrency)

        async def one(problem: Problem) -> None:
            async with gate:
                result = await self.run_problem(problem)
            results[problem.id] = result
            if self.folder:
                self.folder.add_result(result)
            if on_result:
                on_result(result)

        todo = [p for p in problems if p.id not in results]
        complete = False
        try:
            await asyncio.gather(*(one(p) for p in todo))
            complete = all(r.status != "error" for r in results.values())  # a failed one waits for a resume
        finally:
            ordered = [results[p.id] for p in problems if p.id in results]
            busy = self._model_seconds() - busy_before
            summary = RunSummary.of(
                ordered,
                recipe=self.recipe.name,
                task=self.task.spec if self.task else None,
                split=split,
                complete=complete,
                wall_seconds=time.monotonic() - started,
                model_seconds=busy,
                resumed=sum(p.id in done for p in problems),
                oracle=self.recipe.oracle_uses,
            )
            if self.folder:
                self.folder.write_summary(summary)
        return RunResult(results=ordered, summary=summary, out=str(self.folder.path) if self.folder else None)

    def _model_seconds(self) -> float:
        return sum(b.busy_seconds for b in set(self.backends.values()))

    async def run_problem(self, problem: Problem, limits: Limits | None = None) -> ProblemResult:
        """Run the DAG on one problem; `limits` adds a budget of its own (a served request's)."""
        started = time.monotonic()
        meters = [Meter("per-problem", self.recipe.budget.per_problem), self.run_meter]
        if limits is not None:
            meters.append(Meter("per-request", limits))
        ledger = Ledger(meters)
        pools: dict[str, list[Candidate]] = {}
        status, cut_short, error = "ok", None, None
        try:
            for layer in self.layers:
                outputs = await _all_or_nothing(
                    [self._run_node(node_id, problem, pools, ledger) for node_id in layer]
                )
                pools.update(zip(layer, outputs))
        except BudgetExceeded as err:
            status, cut_short = "budget", str(err)
        except Exception as err:  # reported for this problem; the others go on
            status = "error"
            error = f"{type(err).__name__}: {err}"
        output = pools.get(self.recipe.output_node) or []
        best = output[0] if output else None
        # Scoring may execute code (HumanEval): off the event loop, so batching goes on.
        score, covered = 0.0, False
        try:
            score, covered = await asyncio.to_thread(self._judge, problem, best, pools)
        except Exception as err:  # a scorer bug fails this problem, not the run
            status, error = "error", f"scoring failed: {type(err).__name__}: {err}"
        return ProblemResult(
            problem_id=problem.id,
            status=status,
            answer=best.answer if best else None,
            text=best.text if best else None,
            reference=problem.answer,
            score=score,
            coverage=covered,
            output_candidates=len(output),
            usage=ledger.total,
            usage_by_node=ledger.by_node,
            usage_by_model=ledger.by_model,
            shrunk_calls=ledger.shrunk_calls,
            cut_short=cut_short,
            finish_reason=best.finish_reason if best else None,
            error=error,
            seconds=time.monotonic() - started,
        )

    async def _run_node(
        self, node_id: str, problem: Problem, pools: dict[str, list[Candidate]], ledger: Ledger
    ) -> list[Candidate]:
        node = self.recipe.node(node_id)
        tech = get_technique(node.technique)
        inputs = [c for source in node.inputs for c in pools[source]]
        seed = node_seed(self.recipe.seed, problem.id, node_id)
        handles = {
            alias: ModelHandle(alias, self.backends[alias], ledger, node_id, self.cache)
            for alias in self.recipe.models
        }
        ctx = Context(
            problem=problem,
            node=node_id,
            task=self.task,
            models=handles,
            default_model=self.recipe.model_of(node),
            seed=seed,
            rng=random.Random(seed),
        )
        started = time.monotonic()
        outputs: list[Candidate] = []
        failure = None
        try:
            outputs = await tech.fn(ctx, inputs, node.parsed_params())
            _report_progress(node_id, node.technique, outputs, ledger)
            return outputs
        except BudgetExceeded as err:
            failure = f"budget: {err}"
            raise
        except Exception:
            failure = traceback.format_exc(limit=-3)
            raise
        finally:
            if self.folder:
                self.folder.add_trace(
                    {
                        "problem_id": problem.id,
                        "node": node_id,
                        "technique": node.technique,
                        "model": self.recipe.model_of(node),
                        "inputs": [c.id for c in inputs],
                        "outputs": [c.model_dump(mode="json") for c in outputs],
                        "usage": ledger.by_node.get(node_id, Usage()).model_dump(),
                        "seconds": time.monotonic() - started,
                        "error": failure,
                        **({"events": ctx.events} if ctx.events else {}),
                    }
                )

    def _judge(
        self, problem: Problem, best: Candidate | None, pools: dict[str, list[Candidate]]
    ) -> tuple[float, bool]:
        """The output's score, and whether any candidate anywhere was right."""
        score = self._score(problem, best) if best else 0.0
        return score, is_correct(score) or self._covered(problem, pools)

    def _score(self, problem: Problem, candidate: Candidate) -> float:
        if self.task is None:
            return candidate.scores.get("task", 0.0)
        if "task" in candidate.scores:
            return candidate.scores["task"]
        return self.task.score(problem, candidate.text, candidate.answer)

    def _covered(self, problem: Problem, pools: dict[str, list[Candidate]]) -> bool:
        """Was any distinct answer produced anywhere correct? (Each is scored once.)"""
        if self.task is None:
            return False
        seen: set[str | None] = set()
        for pool in pools.values():
            for candidate in pool:
                key = self.task.normalize(candidate.answer) if candidate.answer is not None else candidate.text
                if key in seen:
                    continue
                seen.add(key)
                if is_correct(self.task.score(problem, candidate.text, candidate.answer)):
                    return True
        return False


def _report_progress(node_id: str, technique: str, outputs: list[Candidate], ledger: Ledger) -> None:
    """A finished node, to whoever streams this run (`orchestra.streaming`)."""
    listener = current_listener()
    if listener is not None and listener.progress is not None:
        listener.progress(
            {"node": node_id, "technique": technique, "candidates": len(outputs),
             "completion_tokens": ledger.total.completion_tokens}
        )
