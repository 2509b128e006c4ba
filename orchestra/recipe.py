"""The recipe schema: models, budget, and a DAG of technique nodes.

Recipes are pydantic models, so a recipe built in Python and one loaded from
YAML are the same object and pass the same checks: unknown keys, unknown
techniques, bad parameters, undefined model aliases, missing capabilities and
every DAG problem are reported together, before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestra.backends import BACKENDS, ModelSpec
from orchestra.budget import Budget
from orchestra.errors import Location, RecipeError
from orchestra.graph import dag_problems
from orchestra.oracle import OracleUse, oracle_uses_of


class Node(BaseModel):
    """One technique applied to the candidates of its input nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    technique: str
    model: str | None = None
    inputs: tuple[str, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)

    def parsed_params(self) -> BaseModel:
        from orchestra.technique import get_technique

        return get_technique(self.technique).params.model_validate(self.params)


class Recipe(BaseModel):
    """A named DAG of technique nodes over named models, with a budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    models: dict[str, ModelSpec] = Field(default_factory=lambda: {"default": ModelSpec()})
    budget: Budget = Field(default_factory=Budget)
    seed: int = 0
    nodes: tuple[Node, ...] = Field(min_length=1)
    output: str | None = Field(default=None, description="Output node id; default: the last node.")

    @model_validator(mode="wrap")
    @classmethod
    def _one_error_type(cls, data: Any, handler: Any) -> Recipe:
        """Built in Python or loaded from YAML, a bad recipe raises one RecipeError
        listing every structural and semantic problem found."""
        try:
            return handler(data)
        except ValidationError as err:
            raise RecipeError(_structural_problems(data, err)) from None

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        problems = _semantic_problems(self)
        if problems:
            raise RecipeError(problems)
        return self

    @property
    def output_node(self) -> str:
        return self.output or self.nodes[-1].id

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def model_of(self, node: Node) -> str | None:
        """The model alias a node uses: its own, or the recipe's only model."""
        if node.model is not None:
            return node.model
        return next(iter(self.models)) if len(self.models) == 1 else None

    @property
    def oracle_uses(self) -> list[OracleUse]:
        """Where the recipe names an oracle scorer (one that reads the reference answer),
        node by node; empty for a recipe that could answer a user. See `orchestra.oracle`."""
        return [use for node in self.nodes for use in oracle_uses_of(node.id, node.parsed_params())]

    @property
    def uses_oracle(self) -> bool:
        return bool(self.oracle_uses)

    def fingerprint(self) -> str:
        """Hash of everything that changes results, to refuse resuming a different recipe."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"description"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=False
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        return load_recipe(path)

    def graph(self):
        from orchestra.graph import build_graph

        return build_graph(self)


def _semantic_problems(recipe: Recipe) -> list[tuple[Location, str]]:
    from orchestra.technique import get_technique, model_aliases_of

    problems: list[tuple[Location, str]] = []
    backends = BACKENDS.names()
    for alias, spec in recipe.models.items():
        try:
            BACKENDS.get(spec.backend)
        except KeyError as err:
            problems.append((("models", alias, "backend"), str(err)))
    for i, node in enumerate(recipe.nodes):
        try:
            tech = get_technique(node.technique)
        except KeyError as err:
            problems.append((("nodes", i, "technique"), str(err)))
            continue
        needs = tech.requires
        called: list[str] | None = None  # aliases a multi-model technique calls
        try:
            parsed = tech.params.model_validate(node.params)
            needs = tech.needs_for(parsed)
            called = model_aliases_of(parsed)
        except ValidationError as err:
            for e in err.errors():
                problems.append((("nodes", i, "params", *e["loc"]), e["msg"]))
        if len(node.inputs) < tech.min_inputs:
            problems.append(
                (("nodes", i, "inputs"),
                 f"{node.technique!r} needs at least {tech.min_inputs} input node(s)")
            )
        alias = recipe.model_of(node)
        if called is not None:
            problems.extend(
                _called_model_problems(recipe, i, node.technique, called or list(recipe.models), needs)
            )
        elif node.model is not None and node.model not in recipe.models:
            defined = ", ".join(recipe.models) or "none"
            problems.append(
                (("nodes", i, "model"),
                 f"model alias {node.model!r} is not defined in `models` (defined: {defined})")
            )
        elif tech.needs_model and alias is None:
            problems.append(
                (("nodes", i, "model"),
                 f"{node.technique!r} needs a model and the recipe defines several; name one")
            )
        elif needs and alias in recipe.models:
            spec = recipe.models[alias]
            if spec.backend in backends:
                missing = needs - BACKENDS.get(spec.backend).capabilities
                if missing:
                    problems.append(
                        (("nodes", i, "model"),
                         f"{node.technique!r} needs {', '.join(sorted(missing))}, "
                         f"which backend {spec.backend!r} does not provide")
                    )
    problems.extend(dag_problems(recipe))
    return problems


def _called_model_problems(
    recipe: Recipe, index: int, technique: str, aliases: list[str], needs: frozenset[str]
) -> list[tuple[Location, str]]:
    """Problems with the models a multi-model node (e.g. `ensemble`) calls by alias."""
    problems: list[tuple[Location, str]] = []
    backends = BACKENDS.names()
    for alias in aliases:
        if alias not in recipe.models:
            defined = ", ".join(recipe.models) or "none"
            problems.append(
                (("nodes", index, "params"),
                 f"model alias {alias!r} is not defined in `models` (defined: {defined})")
            )
            continue
        backend = recipe.models[alias].backend
        missing = needs - BACKENDS.get(backend).capabilities if backend in backends else frozenset()
        if missing:
            problems.append(
                (("nodes", index, "params"),
                 f"{technique!r} needs {', '.join(sorted(missing))} of model {alias!r}, "
                 f"which backend {backend!r} does not provide")
            )
    return problems


def _yaml_lines(node: yaml.Node, loc: Location = ()) -> dict[Location, int]:
    """Map each field path of a YAML document to its 1-based line number."""
    lines: dict[Location, int] = {loc: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*loc, key.value)
            lines[sub] = key.start_mark.line + 1
            lines.update({k: v for k, v in _yaml_lines(value, sub).items() if k != sub})
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines.update(_yaml_lines(value, (*loc, index)))
    return lines


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a YAML recipe; every error names the file, field path and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recipe file not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        lines = _yaml_lines(yaml.compose(text)) if data is not None else {}
    except yaml.YAMLError as err:
        raise RecipeError([((), f"not valid YAML: {err}")], str(path)) from None
    if not isinstance(data, dict):
        raise RecipeError([((), "a recipe is a YAML mapping (name, models, nodes, ...)")], str(path))
    return recipe_from_dict(data, source=str(path), lines=lines)


def recipe_from_dict(
    data: dict[str, Any], source: str | None = None, lines: dict[Location, int] | None = None
) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except RecipeError as err:
        raise err.located(source or "recipe", lines or {}) from None


def _structural_problems(data: Any, err: ValidationError) -> list[tuple[Location, str]]:
    problems = [(tuple(e["loc"]), _message(e)) for e in err.errors() if not _spurious(e, data)]
    return problems + _problems_beyond_unknown_keys(data, err)


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden" and error["msg"] == "Extra inputs are not permitted":
        return "unknown key"
    return error["msg"]


def _spurious(error: dict[str, Any], data: Any) -> bool:
    """pydantic reports "nodes: too short" when every node failed; the nodes exist."""
    return (
        error["type"] == "too_short"
        and tuple(error["loc"]) == ("nodes",)
        and isinstance(data, dict)
        and bool(data.get("nodes"))
    )


def _problems_beyond_unknown_keys(data: Any, err: ValidationError) -> list[tuple[Location, str]]:
    """When unknown keys were the only structural errors, drop them and run the semantic
    checks too, so one typo does not hide an unknown technique or a cycle."""
    real = [e for e in err.errors() if not _spurious(e, data)]
    if not isinstance(data, dict) or any(e["type"] != "extra_forbidden" for e in real):
        return []
    cleaned = copy.deepcopy(data)
    for e in real:
        *parents, key = e["loc"]
        holder: Any = cleaned
        for part in parents:
            holder = holder[part]
        holder.pop(key, None)
    try:
        Recipe.model_validate(cleaned)
    except RecipeError as semantic:
        return semantic.problems
    return []
