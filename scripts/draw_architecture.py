"""Draw orchestra's layers and the imports between them, from the code, as docs/architecture.svg.

The picture in docs/architecture.md must not drift from the code, so it is not
drawn by hand: this script parses every module's imports with `ast` (following
pyproject's `[tool.setuptools.package-dir]` mapping, so `techniques/` is
`orchestra.techniques`), puts each module in a layer, and draws the layers as
stacked boxes, bottom to top, with the imports between two layers as one arrow
labelled with how many module pairs it stands for:

    entry points   orchestra (the package face), orchestra.cli, orchestra.server
    search         orchestra.search
    techniques     orchestra.techniques
    core           the rest of orchestra/*: recipe, executor, api, context, budget, cache, registry, tasks, ...
    backends       orchestra.backends: Backend, ModelSpec, the local engine, openai, vllm
    kernels        orchestra.kernels: numerical code

Imports point down. An import that breaks a layer rule (`rule_broken`) is drawn
red: an upward import, `kernels` importing anything else of orchestra, a backend
importing more of the core than its foundation modules, or the core importing a
concrete backend rather than going through the backend registry. Every import
statement counts, lazy (inside a function) and `TYPE_CHECKING` ones too: both
are dependencies a reader has to follow. Names a registry imports from a string
(`importlib.import_module`) are not imports here: that is how the core reaches
techniques, searches and backends without depending on them.

    .venv/bin/python scripts/draw_architecture.py            # writes docs/architecture.svg, prints the table
    .venv/bin/python scripts/draw_architecture.py --check    # also exits 1 if any import breaks a rule

The SVG is deterministic (fixed sizes and fonts, text kept as text, a fixed
`svg.hashsalt`, no date in its metadata), so it only changes when the code does.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

#: Bottom to top; an import from a layer into one above it points the wrong way.
LAYERS = ("foundation", "kernels", "backends", "core", "techniques", "search", "entry points")

#: What each layer holds, printed in its box.
LAYER_NOTES = {
    "foundation": "registry, errors, problem, tool calls, usage, model files, paths: what every layer stands on",
    "kernels": "numerical code: rejection sampling, sparse MLPs and GEMVs, Triton kernels",
    "backends": "Backend base class and registry, ModelSpec, local engine, openai, vllm",
    "core": "recipe, executor, api, context, budget, cache, registries, tasks, reward, scaling",
    "techniques": "one file per technique; scorers, PRMs, step-wise search",
    "search": "architecture search over recipes (optuna)",
    "entry points": "orchestra (the package face), cli, server",
}

#: The entry points: the command line and the server (the Python API, `orchestra.api`, is the
#: core's own face: `orchestra scale` and the search build on it).
ENTRY_POINTS = ("orchestra.cli", "orchestra.server")
#: Modules of the core folder everything stands on, backends included: they import nothing above.
FOUNDATION = (
    "orchestra.registry",
    "orchestra.errors",
    "orchestra.problem",
    "orchestra.usage",
    "orchestra.models",
    "orchestra.paths",
    "orchestra.machine",
    # what a chat turn may carry, and how a streamed reply reaches its server: shared by backends and core
    "orchestra.tool_calls",
    "orchestra.structured_output",
    "orchestra.streaming",
)
#: The backend modules the core may import: the interface, never a concrete backend.
BACKEND_FACE = (
    "orchestra.backends",
    "orchestra.backends.base",
    "orchestra.backends.model_spec",
    "orchestra.backends.generation",
)


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def layer_of(module: str) -> str:
    """The layer an `orchestra.*` module belongs to."""
    if module == "orchestra" or _within(module, ENTRY_POINTS):
        return "entry points"
    for layer, package in (
        ("kernels", "orchestra.kernels"),
        ("techniques", "orchestra.techniques"),
        ("search", "orchestra.search"),
    ):
        if _within(module, (package,)):
            return layer
    if _within(module, ("orchestra.backends",)):
        return "backends"
    return "foundation" if module in FOUNDATION else "core"


def rule_broken(importer: str, imported: str) -> str | None:
    """Which layer rule `importer` importing `imported` breaks, or None if it keeps them all."""
    source, target = layer_of(importer), layer_of(imported)
    if source == target:
        return None
    if source == "kernels":
        return "kernels import nothing from the rest of orchestra"
    if source == "core" and target == "backends":
        return None if imported in BACKEND_FACE else "the core reaches concrete backends only through the registry"
    if LAYERS.index(target) > LAYERS.index(source):
        return f"an upward import ({source} -> {target})"
    return None


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    lines: int


def find_modules(root: Path) -> dict[str, Module]:
    """Every module of the `orchestra` namespace, by name, found through pyproject's package-dir mapping."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    package_dirs = config["tool"]["setuptools"]["package-dir"]
    # The deepest folder decides a file's package, so nested mappings win over their parents.
    folders = sorted(((root / folder).resolve(), package) for package, folder in package_dirs.items())
    tops = [f for f, _ in folders if not any(f != g and f.is_relative_to(g) for g, _ in folders)]
    modules: dict[str, Module] = {}
    for folder in tops:
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            base, package = max(((f, p) for f, p in folders if path.is_relative_to(f)), key=lambda fp: len(fp[0].parts))
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules[name] = Module(name, path, len(path.read_text().splitlines()))
    return modules


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The known module `name` refers to: itself, or its nearest known package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _submodule_or(package: str, name: str, modules: dict[str, Module]) -> str:
    """`from package import name` imports module package.name when there is one, else from package itself."""
    return f"{package}.{name}" if f"{package}.{name}" in modules else package


def imports_of(module: Module, modules: dict[str, Module]) -> set[str]:
    """The `orchestra.*` modules `module` imports (relative imports resolved; `from p import m` is module p.m)."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [_submodule_or(source, alias.name, modules) for alias in node.names]
        else:
            continue
        for name in names:
            if name == "orchestra" or name.startswith("orchestra."):
                resolved = _resolve(name, modules)
                if resolved and resolved != module.name:
                    found.add(resolved)
    return found


@dataclass(frozen=True)
class ImportGraph:
    modules: dict[str, Module]
    #: (importer, imported) module pairs.
    edges: frozenset[tuple[str, str]]

    def layer_counts(self) -> Counter:
        """(source layer, target layer) -> how many module pairs import across them."""
        return Counter((layer_of(a), layer_of(b)) for a, b in self.edges)

    def broken(self) -> list[tuple[str, str, str]]:
        """(importer, imported, rule) for every import that breaks a layer rule, sorted."""
        return sorted((a, b, rule) for a, b in self.edges if (rule := rule_broken(a, b)))


def import_graph(root: Path = ROOT) -> ImportGraph:
    modules = find_modules(root)
    edges = frozenset((name, imported) for name, module in modules.items() for imported in imports_of(module, modules))
    return ImportGraph(modules, edges)


def format_table(graph: ImportGraph) -> str:
    """Layer -> layer import counts (module pairs), importers as rows; then every broken rule."""
    counts = graph.layer_counts()
    width = max(map(len, LAYERS)) + 2
    rows = ["importer \\ imported".ljust(width) + "".join(layer.rjust(width) for layer in LAYERS)]
    for source in reversed(LAYERS):
        rows.append(source.ljust(width) + "".join(str(counts.get((source, t), "")).rjust(width) for t in LAYERS))
    broken = graph.broken()
    rows.append("")
    rows.append(f"imports that break a layer rule: {len(broken)}")
    rows += [f"  {a} -> {b}  ({rule})" for a, b, rule in broken]
    return "\n".join(rows)


# --- drawing ---------------------------------------------------------------------------------------

_BOX_LEFT, _BOX_RIGHT = 24.0, 76.0
_BOX_HEIGHT, _BOX_GAP, _BOTTOM = 11.0, 7.0, 3.0


def _box_bottom(layer: str) -> float:
    return _BOTTOM + LAYERS.index(layer) * (_BOX_HEIGHT + _BOX_GAP)


def _ports(ends: list[tuple[int, float]], bottom: float, lower_half: bool) -> dict[int, float]:
    """y of each arrow end (arrow id, sort key) on one side of a box: spread over half its height, in key order."""
    low = bottom + (0.5 if lower_half else _BOX_HEIGHT / 2 + 0.2)
    high = bottom + (_BOX_HEIGHT / 2 - 0.2 if lower_half else _BOX_HEIGHT - 0.5)
    ordered = [arrow for arrow, _ in sorted(ends, key=lambda end: end[1])]
    step = (high - low) / (len(ordered) + 1)
    return {arrow: low + step * (i + 1) for i, arrow in enumerate(ordered)}


def draw(graph: ImportGraph, out: Path) -> None:
    """Write the layer picture as SVG: boxes bottom to top, downward arrows left, upward arrows right."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    plt.rcParams.update(
        {"svg.hashsalt": "orchestra-architecture", "svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9}
    )
    counts = graph.layer_counts()
    broken = Counter((layer_of(a), layer_of(b)) for a, b, _ in graph.broken())
    top = _box_bottom(LAYERS[-1]) + _BOX_HEIGHT
    figure, axes = plt.subplots(figsize=(11, 10))
    axes.set_xlim(0, 100)
    axes.set_ylim(0, top + 10)
    axes.axis("off")

    lines = Counter()
    sizes = Counter()
    for module in graph.modules.values():
        lines[layer_of(module.name)] += module.lines
        sizes[layer_of(module.name)] += 1
    for layer in LAYERS:
        bottom = _box_bottom(layer)
        axes.add_patch(
            FancyBboxPatch(
                (_BOX_LEFT, bottom), _BOX_RIGHT - _BOX_LEFT, _BOX_HEIGHT,
                boxstyle="round,pad=0,rounding_size=1.2", facecolor="#eef3fb", edgecolor="#3b5b92", linewidth=1.2,
            )
        )
        middle = (_BOX_LEFT + _BOX_RIGHT) / 2
        axes.text(middle, bottom + 8.0, layer, ha="center", va="center", fontsize=12, fontweight="bold")
        axes.text(middle, bottom + 5.3, f"{sizes[layer]} modules, {lines[layer]:,} lines", ha="center", va="center")
        axes.text(middle, bottom + 2.6, LAYER_NOTES[layer], ha="center", va="center", fontsize=7, color="#444444")

    rank = LAYERS.index
    pairs = sorted(
        (pair for pair in counts if pair[0] != pair[1]),
        key=lambda pair: (abs(rank(pair[0]) - rank(pair[1])), rank(pair[0]), rank(pair[1])),
    )
    downward = [p for p in pairs if rank(p[1]) < rank(p[0])]
    upward = [p for p in pairs if rank(p[1]) > rank(p[0])]
    for group, side in ((downward, -1), (upward, +1)):
        # Shorter spans run in the lanes nearest the boxes; each end gets its own port on its box.
        edge = _BOX_LEFT if side < 0 else _BOX_RIGHT
        lane_width = 25.0 / (len(group) + 1)
        lanes = {pair: edge + side * lane_width * (i + 1) for i, pair in enumerate(group)}
        ends: dict[tuple[str, bool], list[tuple[int, float]]] = {}
        for i, (source, target) in enumerate(group):
            distance = abs(lanes[(source, target)] - edge)
            # Downward arrows leave from the lower half of a box and arrive in the upper half, upward
            # ones the other way round; the key orders ends so that horizontal legs do not cross lanes.
            ends.setdefault((source, side > 0), []).append((i, -side * distance))
            ends.setdefault((target, side < 0), []).append((i, side * distance))
        port = {}
        for (layer, upper), layer_ends in ends.items():
            for arrow, y in _ports(layer_ends, _box_bottom(layer), lower_half=not upper).items():
                port[(layer, arrow)] = y
        for i, (source, target) in enumerate(group):
            x = lanes[(source, target)]
            y0, y1 = port[(source, i)], port[(target, i)]
            colour = "#c62828" if broken[(source, target)] else "#333333"
            axes.plot([edge, x, x], [y0, y0, y1], color=colour, linewidth=1.3, solid_joinstyle="miter")
            axes.annotate(
                "", xy=(edge, y1), xytext=(x, y1),
                arrowprops={"arrowstyle": "-|>", "color": colour, "linewidth": 1.3, "shrinkA": 0, "shrinkB": 0},
            )
            label = str(counts[(source, target)])
            if broken[(source, target)] and broken[(source, target)] != counts[(source, target)]:
                label += f" ({broken[(source, target)]} bad)"
            axes.text(
                x, (y0 + y1) / 2, label, ha="center", va="center", fontsize=7.5, color=colour,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
            )

    title = "orchestra: layers and the imports between them"
    axes.text(50, top + 7, title, ha="center", fontsize=13, fontweight="bold")
    axes.text(
        50, top + 3.2,
        "An arrow is every import from one layer into another; its number counts module pairs.\n"
        "Imports point down (left); red: imports that break a layer rule, mostly upward (right).",
        ha="center", va="center", fontsize=8.5, color="#444444",
    )
    axes.text(2, top + 0.2, "downward", fontsize=8, color="#333333")
    axes.text(98, top + 0.2, "upward", fontsize=8, color="#c62828", ha="right")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.svg", help="the SVG to write")
    parser.add_argument("--check", action="store_true", help="exit 1 if any import breaks a layer rule")
    args = parser.parse_args(argv)
    graph = import_graph(ROOT)
    draw(graph, args.out)
    print(format_table(graph))
    print(f"\nwrote {args.out}")
    return 1 if args.check and graph.broken() else 0


if __name__ == "__main__":
    sys.exit(main())
