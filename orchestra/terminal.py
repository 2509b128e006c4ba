"""What every command line of orchestra prints to: its consoles, and how a command fails.

One place, so `orchestra run`, `search` and `reward` look alike: piped output
(CI logs, `| tee`) gets a fixed width instead of rich's 80-column fallback, and
a bad input ends with one red line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; raise the returned exit (code 2) to end the command."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)
