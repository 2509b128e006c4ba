"""A search space of recipes: ordered layers of technique options, their parameter ranges, engine knobs.

    name: archon_small
    models: {small: {model: smollm2-135m-instruct}}
    layers:
      - id: gen                       # always first: a generator
        options:
          - technique: sample
            params: {n: {choices: [1, 2, 4, 8]}, temperature: {choices: [0.5, 0.8]}, max_tokens: 128}
      - id: check
        optional: true                # the sampler may leave this layer out
        options:
          - {technique: critic, params: {max_tokens: 96}}
          - {technique: verify, params: {max_tokens: 96}}
      - id: select
        options:
          - {technique: majority_vote}
          - {label: verified_vote, technique: majority_vote, params: {weight_by: verify}, requires: [verify]}
          - {technique: rank, params: {top_k: {int: [1, 3]}}}
    knobs:                            # any ModelSpec field, by path
      models.small.max_batch_size: {choices: [16, 64]}

Each layer becomes one node whose input is the previous layer's node, so the
generation layer keeps the same node id (and seed) in every trial: trials that
differ only downstream replay its samples from the cache. Parameters are
conditional — an option's parameters are only suggested when that option is
chosen — and a layer's choice is only offered among options that the
construction rules (`orchestra.search.rules`) allow after the layers already
chosen *and* that can still be completed into a valid recipe.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestra.budget import Budget
from orchestra.backends import ModelSpec
from orchestra.oracle import oracle_uses_of
from orchestra.recipe import Recipe
from orchestra.technique import get_technique
from orchestra.search.ranges import Choices, Range, Suggests, parse_range
from orchestra.search.rules import ending_problem, is_generator, is_side_generator, step_problem

#: The label of "this optional layer is left out".
SKIP = "none"


class SpaceError(ValueError):
    """A search space that cannot produce a valid recipe, with every reason."""


class Option(BaseModel):
    """One technique a layer may use, with its parameter ranges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    technique: str
    label: str | None = Field(default=None, description="Name of this option (default: the technique); unique in its layer.")
    model: Any = Field(default=None, description="Model alias, or {choices: [...]} of aliases; default: the space's only model.")
    params: dict[str, Any] = Field(default_factory=dict, description="Technique parameters: fixed values or ranges.")
    requires: list[str] = Field(default_factory=list, description="Labels or techniques that must appear in an earlier layer.")

    @property
    def name(self) -> str:
        return self.label or self.technique

    def ranges(self) -> dict[str, Range]:
        return {key: parse_range(value) for key, value in self.params.items()}


class Layer(BaseModel):
    """One position in the recipe's chain: exactly one of `options`, or none if `optional`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    optional: bool = False
    options: list[Option] = Field(min_length=1)

    @field_validator("options")
    @classmethod
    def _distinct_labels(cls, options: list[Option]) -> list[Option]:
        names = [o.name for o in options]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"options need distinct labels; repeated: {', '.join(duplicates)} (add `label:`)")
        if SKIP in names:
            raise ValueError(f"{SKIP!r} is reserved for a left-out optional layer")
        return options


class SearchSpace(BaseModel):
    """Everything a search may vary; `suggest` turns one optuna trial into one valid Recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    models: dict[str, ModelSpec] = Field(default_factory=lambda: {"default": ModelSpec()})
    budget: Budget = Field(default_factory=Budget, description="Hard per-problem/per-run limits copied into every recipe.")
    seed: int = 0
    layers: list[Layer] = Field(min_length=1)
    knobs: dict[str, Any] = Field(default_factory=dict, description="ModelSpec field paths (models.ALIAS.FIELD[.SUB]) and their ranges.")

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        problems = _space_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def suggest(self, trial: Suggests) -> Recipe:
        """The recipe for one trial: layer choices, their conditional parameters, then knobs."""
        steps: list[tuple[str, str]] = []
        nodes: list[dict[str, Any]] = []
        head: str | None = None  # last node of the candidate chain
        side: str | None = None  # last side node (generated tests)
        for index, layer in enumerate(self.layers):
            allowed = self.allowed(tuple(steps), index)
            every = [o.name for o in layer.options] + ([SKIP] if layer.optional else [])
            name = layer.id if allowed == every else f"{layer.id}[{'|'.join(allowed)}]"
            label = Choices(choices=allowed).suggest(trial, name)
            if label == SKIP:
                continue
            option = next(o for o in layer.options if o.name == label)
            prefix = f"{layer.id}.{label}"
            params = {key: r.suggest(trial, f"{prefix}.{key}") for key, r in option.ranges().items()}
            node: dict[str, Any] = {"id": layer.id, "technique": option.technique, "params": params}
            model = parse_range(option.model).suggest(trial, f"{prefix}.model")
            if model is not None:
                node["model"] = model
            if is_side_generator(option.technique):
                side = layer.id
            elif option.technique == "unit_test_evaluate":
                node["inputs"] = [head, side]
                params["tests_from"] = side
                head = layer.id
            else:
                if not is_generator(option.technique):
                    node["inputs"] = [head]
                head = layer.id
            nodes.append(node)
            steps.append((label, option.technique))
        models = {alias: spec.model_dump(mode="json", exclude_none=True) for alias, spec in self.models.items()}
        for path, value in self.knobs.items():
            _set_path(models, path.split(".")[1:], parse_range(value).suggest(trial, path))
        return Recipe.model_validate(
            {
                "name": self.name,
                "description": f"found by `orchestra search` in space {self.name!r}",
                "models": models,
                "budget": self.budget.model_dump(exclude_none=True),
                "seed": self.seed,
                "nodes": nodes,
                "output": head,
            }
        )

    def describe(self, params: dict[str, Any]) -> str:
        """A trial's recipe in one line, from its parameters: `gen:sample(n=8 temperature=0.5) > select:judge`."""
        steps: list[tuple[str, str]] = []
        parts = []
        for index, layer in enumerate(self.layers):
            allowed = self.allowed(tuple(steps), index)
            label = next((v for k, v in params.items() if k == layer.id or k.startswith(f"{layer.id}[")), allowed[0])
            if label == SKIP:
                continue
            option = next(o for o in layer.options if o.name == label)
            prefix = f"{layer.id}.{label}."
            searched = " ".join(f"{k.removeprefix(prefix)}={v}" for k, v in params.items() if k.startswith(prefix))
            parts.append(f"{layer.id}:{label}" + (f"({searched})" if searched else ""))
            steps.append((label, option.technique))
        knobs = " ".join(f"{path.split('.', 1)[1]}={params[path]}" for path in self.knobs if path in params)
        return " > ".join(parts) + (f" [{knobs}]" if knobs else "")

    def allowed(self, steps: tuple[tuple[str, str], ...], index: int) -> list[str]:
        """Labels layer `index` may take after `steps` such that the recipe can still be completed."""
        return _allowed(self, steps, index)

    def structures(self) -> list[tuple[str, ...]]:
        """Every valid sequence of option labels (left-out layers omitted), for `--dry-run` and tests."""
        found: list[tuple[str, ...]] = []

        def walk(steps: tuple[tuple[str, str], ...], index: int) -> None:
            if index == len(self.layers):
                found.append(tuple(label for label, _ in steps))
                return
            for label in self.allowed(steps, index):
                if label == SKIP:
                    walk(steps, index + 1)
                else:
                    option = next(o for o in self.layers[index].options if o.name == label)
                    walk((*steps, (label, option.technique)), index + 1)

        walk((), 0)
        return found

    def __hash__(self) -> int:  # for the memo of `allowed`; spaces are frozen
        return id(self)


@cache
def _completable(space: SearchSpace, steps: tuple[tuple[str, str], ...], index: int) -> bool:
    if index == len(space.layers):
        return ending_problem(steps) is None
    return bool(_allowed(space, steps, index))


@cache
def _allowed_cached(space: SearchSpace, steps: tuple[tuple[str, str], ...], index: int) -> tuple[str, ...]:
    layer = space.layers[index]
    labels = [
        option.name
        for option in layer.options
        if step_problem(steps, option.name, option.technique, option.requires) is None
        and _completable(space, (*steps, (option.name, option.technique)), index + 1)
    ]
    if layer.optional and _completable(space, steps, index + 1):
        labels.append(SKIP)
    return tuple(labels)


def _allowed(space: SearchSpace, steps: tuple[tuple[str, str], ...], index: int) -> list[str]:
    return list(_allowed_cached(space, steps, index))


def _set_path(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = {}
            tree[part] = child
        tree = child
    tree[parts[-1]] = value


def _variants(option: Option) -> list[dict[str, Any]]:
    """Parameter sets that between them take every choice and every bound of the option's ranges."""
    ranges = option.ranges()
    base = {key: r.corners()[0] for key, r in ranges.items()}
    if option.technique == "unit_test_evaluate":
        base["tests_from"] = "tests"
    return [base] + [{**base, key: value} for key, r in ranges.items() for value in r.corners()[1:]]


def oracle_offers(space: SearchSpace) -> list[str]:
    """Where the space offers an oracle scorer (one that reads the reference answer), e.g.
    `layers.select.pick offers the oracle scorer 'task' (params.scorer)`; defaults count."""
    offers: list[str] = []
    for layer in space.layers:
        for option in layer.options:
            found: dict[str, str] = {}
            for params in _variants(option):
                parsed = get_technique(option.technique).params.model_validate(params)
                found.update({use.param: use.scorer for use in oracle_uses_of(layer.id, parsed)})
            offers += [
                f"layers.{layer.id}.{option.name} offers the oracle scorer {name!r} (params.{param})"
                for param, name in found.items()
            ]
    return offers


def refuse_oracle_offers(space: SearchSpace, *, allow: bool, source: str = "search space") -> None:
    """Raise `SpaceError` (one line) when `space` offers an oracle scorer and `allow` is off."""
    offers = oracle_offers(space)
    if offers and not allow:
        raise SpaceError(
            f"{source}: {'; '.join(offers)}, which reads the reference answer, so the search would choose by the "
            "answer key; pass --allow-oracle (in Python allow_oracle=True) to search it for measurement"
        )


def _space_problems(space: SearchSpace) -> list[str]:
    """Unknown techniques and models, parameter values a technique rejects, bad knob paths, no valid recipe."""
    problems: list[str] = []
    ids = [layer.id for layer in space.layers]
    if len(set(ids)) < len(ids):
        problems.append(f"layer ids must be distinct: {', '.join(ids)}")
    for layer in space.layers:
        for option in layer.options:
            where = f"layers.{layer.id}.{option.name}"
            try:
                tech = get_technique(option.technique)
            except KeyError as err:
                problems.append(f"{where}: {err.args[0]}")
                continue
            try:
                option.ranges()
                model_range = parse_range(option.model)
            except (ValueError, ValidationError) as err:
                problems.append(f"{where}: {err}")
                continue
            for alias in model_range.corners():
                if alias is not None and alias not in space.models:
                    problems.append(f"{where}.model: {alias!r} is not defined in `models` ({', '.join(space.models)})")
            if model_range.corners() == [None] and tech.needs_model and len(space.models) > 1:
                problems.append(f"{where}.model: the space defines several models; name one (or choices)")
            for params in _variants(option):
                try:
                    tech.params.model_validate(params)
                except ValidationError as err:
                    for e in err.errors():
                        field = ".".join(str(p) for p in e["loc"])
                        problems.append(f"{where}.params.{field}: {e['msg']} (value {params.get(e['loc'][0]) if e['loc'] else params!r})")
    for path, value in space.knobs.items():
        parts = path.split(".")
        if len(parts) < 3 or parts[0] != "models" or parts[1] not in space.models:
            problems.append(f"knobs.{path}: a knob is a ModelSpec field path, models.ALIAS.FIELD (aliases: {', '.join(space.models)})")
            continue
        settings = [*ModelSpec.model_fields, *space.models[parts[1]].backend_class.Options.model_fields]
        if parts[2] not in settings:
            problems.append(f"knobs.{path}: model {parts[1]!r} has no setting {parts[2]!r} (settings: {', '.join(settings)})")
            continue
        try:
            corners = parse_range(value).corners()
        except (ValueError, ValidationError) as err:
            problems.append(f"knobs.{path}: {err}")
            continue
        for corner in corners:
            spec = copy.deepcopy(space.models[parts[1]].model_dump(mode="json", exclude_none=True))
            _set_path(spec, parts[2:], corner)
            try:
                ModelSpec.model_validate(spec)
            except ValidationError as err:
                problems.append(f"knobs.{path}: value {corner!r}: {err.errors()[0]['msg']}")
    if not problems and not space.allowed((), 0):
        problems.append("no order of these layers satisfies the construction rules (generation first, critic before rank/fuse, unit tests then evaluation)")
    return problems


def load_space(path: str | Path, *, allow_oracle: bool = False) -> SearchSpace:
    """Load a YAML search space; errors name the file. A space that offers an oracle
    scorer is refused unless `allow_oracle` (see `orchestra.oracle`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"search space file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: a search space is a YAML mapping (name, models, layers, ...)")
    return space_from_dict(data, source=str(path), allow_oracle=allow_oracle)


def space_from_dict(data: dict[str, Any], source: str = "search space", *, allow_oracle: bool = False) -> SearchSpace:
    """A validated search space; one that offers an oracle scorer is refused unless `allow_oracle`."""
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {message}" if loc else message)
        raise SpaceError(f"{source}: " + "; ".join(lines)) from None
    refuse_oracle_offers(space, allow=allow_oracle, source=source)
    return space
