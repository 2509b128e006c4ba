"""Commands that describe rather than run: the recipe schema, a recipe's DAG, the known
models, the registered techniques and the task kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from orchestra.cli.inputs import load_recipe_or_fail
from orchestra.terminal import console, fail


def schema() -> None:
    """Print the recipe JSON Schema (point your editor's YAML support at it)."""
    from orchestra.recipe import Recipe

    print(json.dumps(Recipe.model_json_schema(), indent=2))


def graph(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Picture to write (.png, .svg or .pdf). Default: RECIPE.png")] = None,
) -> None:
    """Print a recipe's nodes and edges and draw its DAG."""
    from orchestra.graph import build_graph, draw, execution_layers

    r = load_recipe_or_fail(recipe)
    g = build_graph(r)
    table = Table(title=f"{r.name}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges", header_style="bold")
    for column in ("layer", "node", "technique", "model", "inputs"):
        table.add_column(column)
    for depth, layer in enumerate(execution_layers(r)):
        for node_id in layer:
            node = r.node(node_id)
            marker = " (output)" if node_id == r.output_node else ""
            table.add_row(str(depth), node_id + marker, node.technique, g.nodes[node_id]["model"] or "-", ", ".join(node.inputs) or "-")
    console.print(table)
    for source, target in g.edges:
        console.print(f"  {source} -> {target}")
    target = out or recipe.with_suffix(".png")
    if target.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise fail("--out must end in .png, .svg or .pdf")
    console.print(f"wrote {draw(r, target)}")


def models() -> None:
    """List known model aliases, whether each is installed, and how to install it."""
    from orchestra.models import model_table

    table = Table(header_style="bold")
    table.add_column("alias", no_wrap=True)
    table.add_column("installed", no_wrap=True)
    table.add_column("file or install command", overflow="fold")
    table.add_column("description")
    for row in model_table():
        mark = "[green]yes[/]" if row["installed"] == "yes" else "[red]no[/]"
        table.add_row(row["alias"], mark, row["where"], row["description"])
    console.print(table)
    console.print("Also accepted as `model:` — a local Hugging Face folder, a .gguf file, or a hub id already in the local HF cache.")


def techniques() -> None:
    """List registered techniques (built-in and from plugins) with their parameters."""
    from orchestra.technique import techniques as registry

    table = Table(header_style="bold")
    for column in ("technique", "what it does", "params", "needs"):
        table.add_column(column)
    for name, tech in sorted(registry().items()):
        params = ", ".join(
            f"{k}={v.get_default(call_default_factory=True)!r}" if not v.is_required() else k
            for k, v in tech.params.model_fields.items()
        )
        table.add_row(name, tech.summary, params or "-", ", ".join(sorted(tech.requires)) or "-")
    console.print(table)


def tasks() -> None:
    """List task kinds and the reasoning-gym datasets."""
    from orchestra.tasks.reasoning_gym_task import dataset_names

    console.print("[bold]task specs[/]: reasoning_gym:NAME?option=value&..., humaneval, jsonl:PATH?prompt=FIELD&answer_field=FIELD")
    console.print("common options: answer=auto|marker|boxed|last_number|regex|code|full, marker=..., pattern=...")
    console.print(f"[bold]reasoning_gym datasets[/] ({len(dataset_names())}): " + ", ".join(dataset_names()))
