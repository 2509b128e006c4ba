"""Built-in techniques and scorers; importing this package registers them."""

from orchestra.techniques import sampling, scoring, selection, voting

__all__ = ["sampling", "scoring", "selection", "voting"]
