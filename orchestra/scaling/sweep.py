"""Scaling curves: what more samples buy a recipe, measured from one pool of generations.

`scale(recipe, task, [1, 2, 4, ..., 64])` runs the recipe once with its
`sample` nodes at the largest n, through the normal engine (generation cache,
budgets, run folder), then evaluates every smaller n without generating anything:

- **Replay, not subsampling, for the recipe's own figures.** The recipe is run
  again at n=k. Sample i of a seeded request is drawn from its own stream
  `(seed, i)` and node seeds do not depend on n, so the sample node asks for
  exactly the first k samples of the pool and the generation cache serves them
  all. Accuracy, coverage and cost at n=k are then those of a real run of the
  recipe at n=k — whatever its downstream nodes do (vote, best-of-n by a
  scorer, a model-based ranker) — which post-hoc subsampling of candidates
  could only reproduce for model-free selectors. Replay is checked, not trusted:
  each row counts the samples its sample nodes really generated (requested
  minus the node's `cache_hits`), which must be 0 below the largest n.
- **Estimators over the whole pool for pass@k and majority@k.** A replay at
  n=k sees one k-subset (the prefix); pass@k (the unbiased estimator of Chen et
  al.) and majority@k (averaged over many k-subsets) use all N samples of the
  pool, so those curves are smoother than any single draw.

The compute axis is the logical cost of the recipe at n=k (a replayed sample
counts the tokens it would have cost), so a curve does not depend on what was
cached. A recipe's per-problem budget is sized for its own n; for larger n
every per-problem limit is scaled up in proportion, so the pool is drawn with
the recipe's own sampling settings (a budget that shrank `max_tokens` would
change the samples, and the smaller-n replays would miss the cache).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.api import arun
from orchestra.budget import Budget, Limits
from orchestra.cache import GenerationCache
from orchestra.candidate import Candidate
from orchestra.errors import RecipeError
from orchestra.metrics import is_correct, majority_at_k, pass_at_k
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunResult
from orchestra.significance import Interval
from orchestra.tasks import Split, Task
from orchestra.technique import get_technique
from orchestra.technique import techniques as techniques_by_name

#: Random k-subsets per problem that majority@k averages over (all of them when there are fewer).
DEFAULT_SUBSETS = 1000


class ScaleError(ValueError):
    """Bad input to a scaling run: no sample node, malformed sample counts, no cache."""


def parse_sample_counts(text: str) -> list[int]:
    """ "1,2,4,8" -> [1, 2, 4, 8]: positive integers, sorted, duplicates dropped."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise ScaleError(f"--n wants comma-separated sample counts such as 1,2,4,8; got {text!r}")
    counts = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise ScaleError(f"--n: {part!r} is not a whole number (in {text!r})") from None
        if value < 1:
            raise ScaleError(f"--n: sample counts must be at least 1, got {value}")
        counts.append(value)
    return sorted(set(counts))


def sample_nodes(recipe: Recipe) -> list[str]:
    """Ids of the recipe's `sample` nodes: the ones whose n a curve varies."""
    found = [node.id for node in recipe.nodes if get_technique(node.technique).scales_samples]
    if not found:
        techniques = ", ".join(f"{node.id} ({node.technique})" for node in recipe.nodes)
        wanted = " or ".join(repr(name) for name, t in sorted(techniques_by_name().items()) if t.scales_samples)
        raise ScaleError(
            f"recipe {recipe.name!r} has no {wanted} node with a sample count n to scale (its nodes: {techniques})"
        )
    return found


def recipe_sample_count(recipe: Recipe) -> int:
    """The recipe's own n: the largest over its sample nodes."""
    return max(recipe.node(node_id).parsed_params().n for node_id in sample_nodes(recipe))  # type: ignore[attr-defined]


def _scaled_limits(limits: Limits, factor: float) -> Limits:
    scaled: dict[str, Any] = {}
    for name, value in limits.model_dump().items():
        if value is None:
            scaled[name] = None
        elif isinstance(value, int):
            scaled[name] = math.ceil(value * factor)
        else:
            scaled[name] = value * factor
    return Limits(**scaled)


def with_sample_count(recipe: Recipe, n: int) -> Recipe:
    """The recipe with every sample node drawing n samples, its per-problem budget scaled up when n grows."""
    targets = set(sample_nodes(recipe))
    data = recipe.model_dump(mode="python")
    data["nodes"] = [
        {**node, "params": {**node["params"], "n": n}} if node["id"] in targets else node for node in data["nodes"]
    ]
    factor = n / recipe_sample_count(recipe)
    if factor > 1:
        budget = recipe.budget
        data["budget"] = Budget(per_problem=_scaled_limits(budget.per_problem, factor), per_run=budget.per_run)
    try:
        return Recipe.model_validate(data)
    except RecipeError as err:
        raise ScaleError(f"the recipe at n={n} is not valid:\n{err}") from None


class PoolSample(BaseModel):
    """One sample of the pool, judged: its vote (normalised answer) and whether it is right."""

    model_config = ConfigDict(frozen=True)

    vote: str | None
    correct: bool


class ScaleRow(BaseModel):
    """Figures at one sample count n."""

    model_config = ConfigDict(extra="forbid")

    n: int
    problems: int
    pass_at_k: float | None = Field(description="Unbiased pass@n over the largest pool (None with several sample nodes).")
    majority_at_k: float | None = Field(description="Majority vote over n samples, averaged over n-subsets of the pool.")
    accuracy: float = Field(description="The recipe's exact accuracy at this n (replaying the first n samples).")
    accuracy_ci: Interval | None = Field(
        default=None, description="95% percentile-bootstrap interval of the accuracy over problems."
    )
    coverage: float = Field(description="Share of problems where some candidate of the recipe at this n was right.")
    tokens_per_problem: float
    flops_per_problem: float
    tokens_per_correct: float | None
    generated: int = Field(description="Samples the sample nodes really generated (not replayed from the cache).")
    replayed: int = Field(description="Samples the sample nodes replayed from the generation cache.")
    errors: int
    cut_short: int
    out: str


class ScaleResult(BaseModel):
    """A scaling curve: one row per sample count, ascending."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    oracle: list[str] = Field(
        default_factory=list,
        description="Where the recipe chooses with an oracle scorer, as node.param=scorer (empty: nowhere); "
        "its curve is a measurement (an upper bound), marked `(oracle)` in the table, CSV and plot.",
    )
    task: str | None
    split: str
    problems: int
    pool_n: int
    nodes: list[str]
    rows: list[ScaleRow]
    out: str

    def regenerated(self) -> dict[int, int]:
        """Sample counts below the pool's that generated samples instead of replaying them: n -> samples.

        Empty when the replay worked as designed.
        """
        return {row.n: row.generated for row in self.rows if row.n < self.pool_n and row.generated}

    def row(self, n: int) -> ScaleRow:
        return next(row for row in self.rows if row.n == n)


class ScaleObserver:
    """Progress hooks for a long scaling run; the default does nothing (the CLI draws bars)."""

    def stage(self, name: str, total: int) -> None:
        """A stage of `total` steps begins (a run at some n, or judging the pool)."""

    def step(self, name: str, result: ProblemResult | None = None) -> None:
        """One step of stage `name` finished (a problem's result, for runs)."""


def sample_usage(result: RunResult, nodes: Sequence[str], n: int) -> tuple[int, int]:
    """(generated, replayed) samples of the sample nodes over a run's problems.

    Each call of a scaled node asks for n samples (techniques registered with `scales_samples`); the
    node's `cache_hits` count those replayed, so the rest were generated.
    """
    generated = replayed = 0
    for problem in result.results:
        for node in nodes:
            used = problem.usage_by_node.get(node)
            if used is None:
                continue
            replayed += used.cache_hits
            generated += max(0, used.calls * n - used.cache_hits)
    return generated, replayed


def pool_candidates(run_folder: Path, nodes: Sequence[str]) -> dict[str, list[Candidate]]:
    """The candidates the sample nodes produced per problem, read from a run folder's trace.

    A problem retried after a failure has several trace records for a node; the
    last one without an error is the run's.
    """
    latest: dict[tuple[str, str], list[dict[str, Any]]] = {}
    trace = run_folder / "trace.jsonl"
    if trace.exists():
        for line in trace.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if record.get("node") in nodes and not record.get("error"):
                latest[(record["problem_id"], record["node"])] = record["outputs"]
    pools: dict[str, list[Candidate]] = {}
    for (problem_id, node), outputs in latest.items():
        pools.setdefault(problem_id, []).extend(Candidate.model_validate(c) for c in outputs)
    return pools


def judge_pool(task: Task, problem: Problem, candidates: Sequence[Candidate]) -> list[PoolSample]:
    """Score a problem's pool, each distinct answer once (scoring may execute code)."""
    verdicts: dict[Any, bool] = {}
    judged = []
    for candidate, vote in zip(candidates, task.vote_keys([c.answer for c in candidates])):
        key = vote if vote is not None else ("text", candidate.text)
        if key not in verdicts:
            verdicts[key] = vote is not None and is_correct(task.score(problem, candidate.text, candidate.answer))
        judged.append(PoolSample(vote=vote, correct=verdicts[key]))
    return judged


def pool_metrics(pool: Sequence[PoolSample], k: int, *, subsets: int, seed: int) -> tuple[float, float]:
    """(pass@k, majority@k) of one problem's pool.

    A pool cut short (a failed or budget-stopped problem) is judged on the
    samples it has; an empty pool scores 0.
    """
    if not pool:
        return 0.0, 0.0
    k = min(k, len(pool))
    correct_votes = {s.vote for s in pool if s.correct and s.vote is not None}
    passed = pass_at_k(len(pool), sum(s.correct for s in pool), k)
    majority = majority_at_k([s.vote for s in pool], correct_votes, k, subsets=subsets, seed=seed)
    return passed, majority


async def ascale(
    recipe: Recipe,
    task: Task,
    counts: Sequence[int],
    *,
    out: str | Path,
    cache: GenerationCache,
    problems: list[Problem] | None = None,
    split: Split = "test",
    limit: int | None = None,
    concurrency: int = 32,
    subsets: int = DEFAULT_SUBSETS,
    observer: ScaleObserver | None = None,
) -> ScaleResult:
    """Async version of `scale`."""
    if cache is None:
        raise ScaleError("a scaling run replays smaller n from the generation cache; it cannot run without one")
    if not counts or any(n < 1 for n in counts):
        raise ScaleError(f"sample counts must be positive integers, got {list(counts)}")
    counts = sorted(set(counts))
    nodes = sample_nodes(recipe)
    recipes = {n: with_sample_count(recipe, n) for n in counts}  # every n validated before anything runs
    if problems is None:
        problems = task.problems(split, limit)
    if not problems:
        raise ScaleError(f"task {task.spec!r} has no problems in split {split!r}")
    observer = observer or ScaleObserver()
    out = Path(out)
    pool_n = counts[-1]
    runs: dict[int, RunResult] = {}
    for n in reversed(counts):  # the largest first: it generates the pool the others replay
        name = f"n={n}"
        observer.stage(name, len(problems))
        runs[n] = await arun(
            recipes[n], task, problems=problems, split=split, out=out / f"n{n}", cache=cache,
            concurrency=concurrency, on_result=lambda result, name=name: observer.step(name, result),
        )

    pools: dict[str, list[PoolSample]] = {}
    if len(nodes) == 1:
        candidates = pool_candidates(out / f"n{pool_n}", nodes)
        observer.stage("judging pool", len(problems))

        def judge(problem: Problem) -> list[PoolSample]:
            judged = judge_pool(task, problem, candidates.get(problem.id, []))
            observer.step("judging pool")
            return judged

        # Off the event loop and in parallel: HumanEval's scorer runs each program in a subprocess.
        judged = await asyncio.gather(*(asyncio.to_thread(judge, problem) for problem in problems))
        pools = {problem.id: pool for problem, pool in zip(problems, judged)}

    rows = []
    for n in counts:
        summary = runs[n].summary
        generated, replayed = sample_usage(runs[n], nodes, n)
        passed = majority = None
        if pools:
            figures = [pool_metrics(pools[p.id], n, subsets=subsets, seed=index) for index, p in enumerate(problems)]
            passed = sum(f[0] for f in figures) / len(figures)
            majority = sum(f[1] for f in figures) / len(figures)
        rows.append(
            ScaleRow(
                n=n,
                problems=summary.problems,
                pass_at_k=passed,
                majority_at_k=majority,
                accuracy=summary.accuracy,
                accuracy_ci=summary.accuracy_ci,
                coverage=summary.coverage,
                tokens_per_problem=summary.tokens_per_problem,
                flops_per_problem=summary.flops_per_problem,
                tokens_per_correct=summary.tokens_per_correct,
                generated=generated,
                replayed=replayed,
                errors=summary.errors,
                cut_short=summary.cut_short,
                out=runs[n].out or "",
            )
        )
    result = ScaleResult(
        recipe=recipe.name,
        oracle=[str(use) for use in recipe.oracle_uses],
        task=task.spec,
        split=split,
        problems=len(problems),
        pool_n=pool_n,
        nodes=nodes,
        rows=rows,
        out=str(out),
    )
    (out / "scale.json").write_text(result.model_dump_json(indent=2))
    return result


def scale(
    recipe: Recipe | str | Path,
    task: Task | str,
    counts: Sequence[int],
    *,
    out: str | Path,
    cache: GenerationCache | str | Path | None = None,
    problems: list[Problem] | None = None,
    split: Split = "test",
    limit: int | None = None,
    concurrency: int = 32,
    subsets: int = DEFAULT_SUBSETS,
    observer: ScaleObserver | None = None,
) -> ScaleResult:
    """Measure a recipe at several sample counts from one pool of generations (see the module docstring).

    `cache` is a `GenerationCache` or its path (default: orchestra's shared
    cache); a scaling run cannot do without one. Writes one run folder per n
    (`out/n8`, ...) and `out/scale.json`; `orchestra.scaling.report` turns the
    result into a CSV table, a terminal table and a plot.
    """
    from orchestra.paths import default_cache_path
    from orchestra.recipe import load_recipe
    from orchestra.tasks import load_task

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if isinstance(task, str):
        task = load_task(task)
    store = cache if isinstance(cache, GenerationCache) else GenerationCache(cache or default_cache_path())
    try:
        return asyncio.run(
            ascale(recipe, task, counts, out=out, cache=store, problems=problems, split=split, limit=limit,
                   concurrency=concurrency, subsets=subsets, observer=observer)
        )
    finally:
        if store is not cache:  # opened here, so closed here
            store.close()
