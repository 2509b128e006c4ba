"""Techniques for code problems: tests the model writes, and candidates chosen by running them.

Running code is `orchestra.code_execution`'s job; these modules only decide
what to run and what the verdicts mean for the candidates.
"""
