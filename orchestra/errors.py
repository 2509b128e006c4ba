"""Recipe errors that say where: the file, the field path and, for YAML, the line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

Location = tuple[str | int, ...]


def format_location(loc: Location) -> str:
    """("nodes", 1, "params", "n") -> "nodes[1].params.n"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<recipe>"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """"unknown technique 'critc'; did you mean critic? (known: ...)" for any registry."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(names)})"


class RecipeError(Exception):
    """One or more problems with a recipe, each with the field path it is about."""

    def __init__(
        self,
        problems: Sequence[tuple[Location, str]],
        source: str | None = None,
        lines: dict[Location, int] | None = None,
    ):
        self.problems = list(problems)
        self.source = source
        self.lines = lines or {}
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.source or "recipe"
        count = len(self.problems)
        head = f"{where}: {count} problem{'s' if count != 1 else ''}"
        rows = []
        for loc, msg in self.problems:
            line = self._line_of(loc)
            at = f" (line {line})" if line else ""
            rows.append(f"  {format_location(loc)}{at}: {msg}")
        return "\n".join([head, *rows])

    def _line_of(self, loc: Location) -> int | None:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                return self.lines[loc[:cut]]
        return None

    def located(self, source: str, lines: dict[Location, int]) -> RecipeError:
        """The same problems, now naming the file they came from."""
        return RecipeError(self.problems, source, lines)
