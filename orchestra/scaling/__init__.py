"""`orchestra scale`: accuracy, pass@n and majority@n against compute, from one pool of samples
(`sweep`), as a table, a CSV and a plot (`report`).

    from orchestra.scaling import scale
    result = scale("recipes/best_of_n.yaml", "reasoning_gym:chain_sum", [1, 2, 4, 8], out="runs/scale")
"""

from orchestra.scaling.sweep import ScaleError, ScaleResult, ScaleRow, ascale, scale

__all__ = ["ScaleError", "ScaleResult", "ScaleRow", "ascale", "scale"]
