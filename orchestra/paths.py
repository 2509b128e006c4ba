"""Where orchestra keeps state between runs (converted models, the generation cache)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$ORCHESTRA_HOME`, else `~/.cache/orchestra`."""
    root = os.environ.get("ORCHESTRA_HOME")
    return Path(root) if root else Path.home() / ".cache" / "orchestra"


def default_cache_path() -> Path:
    return home() / "generations.sqlite"


def teal_thresholds_folder() -> Path:
    """Where the local engine keeps TEAL's calibrated sparsity thresholds (`orchestra.kernels.teal_calibration`)."""
    return home() / "sparse" / "teal"
