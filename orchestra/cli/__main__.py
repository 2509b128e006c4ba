"""`python -m orchestra.cli ...`, as `orchestra ...`."""

from orchestra.cli import app

app()
