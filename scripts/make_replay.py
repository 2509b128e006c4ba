"""Write the quickstart's replay file: exactly the samples `make quickstart` needs, and nothing else.

The quickstart compares recipes on 200 problems, which takes the 2-core CPU
about 40 minutes to sample; a fresh clone replays those samples instead
(the README says so). This runs the given recipes on the task through a
recording cache: every sample they read is served from (or generated into)
the source cache and copied into the replay file, so the file holds what the
model produced for those exact requests.

    .venv/bin/python scripts/make_replay.py recipes/quickstart.yaml recipes/greedy.yaml \\
        --task TASK -n 200 --out quickstart.sqlite && gzip -9 -c quickstart.sqlite > recipes/replay/quickstart.sqlite.gz
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import orchestra
from orchestra.backends import Completion
from orchestra.cache import GenerationCache
from orchestra.paths import default_cache_path


class RecordingCache(GenerationCache):
    """Serves from `source` and keeps a copy of every sample served or generated in its own file."""

    def __init__(self, source: GenerationCache, path: Path):
        super().__init__(path)
        self.source = source

    def lookup(self, key: str, first: int, count: int) -> dict[int, tuple[Completion, int]]:
        found = self.source.lookup(key, first, count)
        for index, (completion, prompt_tokens) in found.items():
            super().store(key, index, [completion], prompt_tokens)
        return found

    def store(self, key: str, first: int, completions: list[Completion], prompt_tokens: int) -> None:
        self.source.store(key, first, completions, prompt_tokens)
        super().store(key, first, completions, prompt_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--task", required=True)
    parser.add_argument("-n", "--problems", type=int, default=200)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, default=default_cache_path(), help="cache to read from and add to")
    args = parser.parse_args()

    args.out.unlink(missing_ok=True)
    cache = RecordingCache(GenerationCache(args.source), args.out)
    for recipe in args.recipes:
        result = orchestra.run(recipe, args.task, split=args.split, limit=args.problems, cache=cache)
        print(f"{result.summary.recipe}: {result.accuracy:.1%}, {result.summary.usage.cache_hits} samples replayed")
    samples = cache.count()
    cache.close()
    with sqlite3.connect(args.out) as db:  # one self-contained, compact file to commit
        db.execute("PRAGMA journal_mode=DELETE")
    with sqlite3.connect(args.out) as db:
        db.execute("VACUUM")
    print(f"{args.out}: {samples} samples, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
