"""Built-in techniques and scorers; importing this package registers them."""

from orchestra.techniques import execution, sampling, scoring, selection, unit_tests, voting

__all__ = ["execution", "sampling", "scoring", "selection", "unit_tests", "voting"]
