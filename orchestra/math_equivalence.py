"""Deciding that two math answers are the same value, with HF's math-verify.

Normalised strings split `1/2`, `0.5` and `\\frac{1}{2}` into three answers, so
a vote over them counts three and a correct `\\frac{1}{2}` scores 0 against a
reference of `0.5`. math-verify parses LaTeX and plain expressions into SymPy
and compares values, sets, intervals and equations (`x=3` matches `3`). An
extracted answer is parsed as inline LaTeX (`$...$`), as math-verify expects
of a reference answer. Words stay words: an answer of letters only is compared
as text, since LaTeX would read `cat` as the product c·a·t.

math-verify bounds each parse and comparison with `signal.alarm`, which only
the main thread may set; elsewhere (a server's worker thread) it runs
without that bound.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

_WORDS = re.compile(r"[^\W\d_]+(?:[\s'-]+[^\W\d_]+)*\.?")
_SECONDS = 5


def _timeout() -> int | None:
    return _SECONDS if threading.current_thread() is threading.main_thread() else None


def _as_text(answer: str) -> str:
    return " ".join(answer.lower().split()).rstrip(".")


@lru_cache(maxsize=4096)
def _parsed(answer: str) -> tuple[Any, ...]:
    """math-verify's reading of an answer (empty when it finds no math in it)."""
    from math_verify import parse

    inner = answer.strip().strip("$").strip()
    return tuple(parse(f"${inner}$", parsing_timeout=_timeout())) if inner else ()


def math_equal(reference: str, answer: str) -> bool:
    """Whether `answer` is the same mathematical object as `reference` (math-verify's verdict).

    math-verify is not symmetric (it reads `x=3` in the reference as the value
    3, not the other way round), so the reference, or in a vote the group's
    first answer, comes first. Answers it cannot parse, and answers made of
    words, are equal when their case- and space-folded texts are.
    """
    if _WORDS.fullmatch(reference.strip()) or _WORDS.fullmatch(answer.strip()):
        return _as_text(reference) == _as_text(answer)
    gold, target = _parsed(reference), _parsed(answer)
    if not gold or not target:
        return _as_text(reference) == _as_text(answer)
    from math_verify import verify

    return bool(verify(list(gold), list(target), timeout_seconds=_timeout()))
