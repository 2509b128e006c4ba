"""Procedurally generated reasoning problems from reasoning-gym, in fixed splits.

reasoning-gym draws every item from (seed, index), so fixing a seed per split
gives splits that never change. A few datasets (e.g. `acre`) instead pre-generate
a pool whose content depends on the dataset size, so a split is always built at
its full `size` and sliced: the first k problems never depend on the limit asked for.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from typing import Any

from orchestra.answers import AnswerFormat
from orchestra.problem import Problem
from orchestra.tasks.base import SPLITS, Split, Task, task_kind
from orchestra.tasks.base import answer_instruction, check_limit, check_split

DEFAULT_SIZE = 200


def split_seed(split: Split, seed: int = 0) -> int:
    """The dataset seed of a split: fixed, distinct per split, and independent of hash() randomisation."""
    return int(hashlib.sha256(f"orchestra-seed/{seed}/{split}".encode()).hexdigest()[:8], 16)


def dataset_names() -> list[str]:
    """Every registered reasoning-gym dataset (imported lazily: reasoning_gym takes ~1 s to import)."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def jsonable(value: Any) -> Any:
    """`value` with tuples/sets as lists, keys as strings and odd objects as text, so it survives json.dumps."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=repr)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if callable(getattr(value, "item", None)):  # numpy scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


@task_kind("reasoning_gym")
class ReasoningGymTask(Task):
    """One reasoning-gym dataset with a given config; each split holds `size` problems.

    Task options: `size` (problems per split, default 200) and `seed` (shifts all
    split seeds, default 0); everything else is the dataset's own config.
    """

    name_is = "a dataset name"
    default_answer_format = AnswerFormat()

    def __init__(
        self,
        name: str,
        *,
        spec: str | None = None,
        answer_format: AnswerFormat | None = None,
        size: int = DEFAULT_SIZE,
        seed: int = 0,
        **config: Any,
    ) -> None:
        from reasoning_gym.factory import DATASETS

        if name not in DATASETS:
            close = difflib.get_close_matches(name, DATASETS, n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see reasoning_gym.factory.DATASETS"
            raise ValueError(f"unknown reasoning_gym dataset {name!r}{hint}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"reasoning_gym:{name}: size must be a positive integer, got {size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"reasoning_gym:{name}: seed must be an integer, got {seed!r}")
        config_cls = DATASETS[name][1]
        accepted = sorted(f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size"))
        for key in config:
            if key not in accepted:
                raise ValueError(
                    f"reasoning_gym:{name}: unknown option {key!r}; "
                    f"config keys: {', '.join(accepted)}; task options: size, seed, answer, marker, pattern, compare"
                )
        self.name = name
        self.spec = spec or f"reasoning_gym:{name}"
        self.answer_format = answer_format or self.default_answer_format
        self.size = size
        self.seed = seed
        self.config = dict(config)
        self._datasets: dict[Split, Any] = {}
        self._entries: dict[tuple[Split, int], dict[str, Any]] = {}
        self._dataset("test")  # validate config values now, not at the first problems() call

    def _dataset(self, split: Split) -> Any:
        """The split's dataset object, built once (building is cheap; items are generated on access)."""
        if split not in self._datasets:
            import reasoning_gym

            try:
                self._datasets[split] = reasoning_gym.create_dataset(
                    self.name, seed=split_seed(split, self.seed), size=self.size, **self.config
                )
            except (AssertionError, TypeError, ValueError) as error:
                raise ValueError(f"reasoning_gym:{self.name}: invalid config {self.config}: {error}") from None
        return self._datasets[split]

    def _entry(self, split: Split, index: int) -> dict[str, Any]:
        key = (split, index)
        if key not in self._entries:
            self._entries[key] = self._dataset(split)[index]
        return self._entries[key]

    def problems(self, split: Split = "test", limit: int | None = None) -> list[Problem]:
        check_split(split)
        check_limit(limit)
        count = self.size if limit is None else min(limit, self.size)
        instruction = answer_instruction(self.answer_format)
        problems = []
        for index in range(count):
            entry = self._entry(split, index)
            question = entry["question"]
            prompt = f"{question}\n{instruction}" if instruction else question
            problems.append(
                Problem.from_prompt(
                    f"{self.name}/{split}/{index}",
                    prompt,
                    answer=None if entry["answer"] is None else str(entry["answer"]),  # None: verifier-only datasets
                    metadata=jsonable(
                        {
                            "dataset": self.name,
                            "split": split,
                            "index": index,
                            "question": question,
                            "metadata": entry.get("metadata", {}),
                        }
                    ),
                )
            )
        return problems

    def _entry_for(self, problem: Problem) -> tuple[Any, dict[str, Any]]:
        """The dataset and original entry behind `problem`.

        The regenerated entry is preferred (its metadata keeps the exact types the
        scorer expects); a problem that does not match this task's items is
        scored from its own fields.
        """
        meta = problem.metadata
        split, index = meta.get("split"), meta.get("index")
        if meta.get("dataset") == self.name and split in SPLITS and isinstance(index, int) and 0 <= index < self.size:
            entry = self._entry(split, index)
            if entry["question"] == meta.get("question"):
                return self._dataset(split), entry
        rebuilt = {"question": meta.get("question", problem.prompt), "answer": problem.answer, "metadata": meta.get("metadata", {})}
        return self._dataset("test"), rebuilt

    def score(self, problem: Problem, text: str, answer: str | None) -> float:
        """The dataset's own scorer (it knows equivalent forms and partial credit); a crash scores 0.
        With `compare=math` an answer of the reference's mathematical value scores 1 as well."""
        if answer is None:
            return 0.0
        if self.answer_format.compare == "math" and problem.answer is not None and self.same_answer(problem.answer, answer):
            return 1.0
        dataset, entry = self._entry_for(problem)
        try:
            return float(dataset.score_answer(answer, entry))
        except Exception:  # noqa: BLE001 - a malformed answer must not stop an evaluation run
            return 0.0
