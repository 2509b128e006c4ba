"""Which of orchestra's output folders a path is, told by the files each kind writes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

FolderKind = Literal["run", "compare", "scale", "search"]


class NotAReportFolder(ValueError):
    """The path is missing, or holds none of the folders `orchestra report` draws."""


def folder_kind(folder: Path) -> FolderKind:
    """run (run.json + results.jsonl), compare (comparison.json), scale (scale.json), search (trials.csv)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAReportFolder(f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist")
    if (folder / "comparison.json").is_file():
        return "compare"
    if (folder / "scale.json").is_file():
        return "scale"
    if (folder / "trials.csv").is_file() or (folder / "study.db").is_file():
        return "search"
    if (folder / "run.json").is_file() and (folder / "results.jsonl").is_file():
        return "run"
    raise NotAReportFolder(
        f"{folder} is not a run, --compare, scale or search folder "
        "(none of run.json + results.jsonl, comparison.json, scale.json, trials.csv)"
    )
