"""The recipe as a networkx DiGraph: validation, execution order, and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from orchestra.errors import Location

if TYPE_CHECKING:
    from orchestra.recipe import Recipe


def build_graph(recipe: Recipe) -> nx.DiGraph:
    """Nodes are node ids (with their technique and model); edges run input -> consumer."""
    from orchestra.technique import techniques

    known = techniques()
    graph = nx.DiGraph()
    for node in recipe.nodes:
        uses_model = node.technique not in known or known[node.technique].needs_model
        graph.add_node(node.id, technique=node.technique, model=recipe.model_of(node) if uses_model else None)
    for node in recipe.nodes:
        for source in node.inputs:
            if source in graph:
                graph.add_edge(source, node.id)
    return graph


def dag_problems(recipe: Recipe) -> list[tuple[Location, str]]:
    """Everything structurally wrong with the DAG: ids, inputs, cycles, output, reachability."""
    problems: list[tuple[Location, str]] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(recipe.nodes):
        if node.id in seen:
            problems.append((("nodes", i, "id"), f"duplicate node id {node.id!r} (also nodes[{seen[node.id]}])"))
        seen.setdefault(node.id, i)
        for j, source in enumerate(node.inputs):
            if source == node.id:
                problems.append((("nodes", i, "inputs", j), f"node {node.id!r} lists itself as input"))
            elif source not in seen and source not in {n.id for n in recipe.nodes}:
                problems.append((("nodes", i, "inputs", j), f"input {source!r} is not a node of this recipe"))
    graph = build_graph(recipe)
    try:
        cycle = nx.find_cycle(graph)
        path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
        problems.append((("nodes",), f"the nodes form a cycle: {path}"))
    except nx.NetworkXNoCycle:
        pass
    output = recipe.output_node
    if output not in graph:
        problems.append((("output",), f"output node {output!r} is not a node of this recipe"))
        return problems
    feeding = nx.ancestors(graph, output) | {output}
    for i, node in enumerate(recipe.nodes):
        if node.id not in feeding:
            problems.append(
                (("nodes", i), f"node {node.id!r} is unreachable: it does not feed the output {output!r}")
            )
    return problems


def execution_layers(recipe: Recipe) -> list[list[str]]:
    """Groups of node ids whose inputs are all in earlier groups; a group runs concurrently."""
    return [sorted(layer) for layer in nx.topological_generations(build_graph(recipe))]


def draw(recipe: Recipe, path: str | Path) -> Path:
    """Write a picture of the DAG, left to right in execution order (PNG, SVG or PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    graph = build_graph(recipe)
    for depth, layer in enumerate(execution_layers(recipe)):
        for node_id in layer:
            graph.nodes[node_id]["layer"] = depth
    positions = nx.multipartite_layout(graph, subset_key="layer")
    labels = {
        n: f"{n}\n{d['technique']}" + (f"\n[{d['model']}]" if d["model"] else "")
        for n, d in graph.nodes(data=True)
    }
    width = max(4.0, 2.6 * len(execution_layers(recipe)))
    fig, ax = plt.subplots(figsize=(width, 3.5))
    colors = ["#f4a261" if n == recipe.output_node else "#8ecae6" for n in graph.nodes]
    nx.draw_networkx_nodes(graph, positions, node_color=colors, node_size=3200, node_shape="s", ax=ax)
    nx.draw_networkx_labels(graph, positions, labels=labels, font_size=8, ax=ax)
    nx.draw_networkx_edges(graph, positions, arrows=True, arrowsize=16, node_size=3200, node_shape="s", ax=ax)
    ax.set_title(f"recipe: {recipe.name}  (output: {recipe.output_node})", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
