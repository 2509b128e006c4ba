"""Parsers of the LLM components on malformed model output: rankings, verdicts, critiques."""

from __future__ import annotations

import math

import pytest

from orchestra.candidate import Candidate
from orchestra.techniques._candidate_list import clip, numbered
from orchestra.techniques._verdict import verdict_reply, written_verdict, yes_probability
from orchestra.techniques.critic import parse_critique
from orchestra.techniques.rank import fallback_order, parse_ranking

# --- rank -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "k", "order"),
    [
        ("[2] > [1] > [3]", 3, [1, 0, 2]),
        ("2, 1, 3", 3, [1, 0, 2]),
        ("3 > 1", 3, [2, 0, 1]),  # missing candidates follow in input order
        ("[2] > [2] > [1] > [2]", 3, [1, 0, 2]),  # duplicates dropped
        ("[5] > [0] > [2] > [-1]", 3, [1, 0, 2]),  # out of range dropped
        ("Ranking: [3]>[1]>[2]\nBecause 7 + 8 = 15", 3, [2, 0, 1]),  # brackets win over prose numbers
        ("The best is Candidate 3, then candidate 1.", 4, [2, 0, 1, 3]),
        ("Solution #2 is correct.", 2, [1, 0]),
        ("1. 2. 3.", 3, [0, 1, 2]),
        ("\n\n  3, 2\nand 1 is worst", 3, [2, 1, 0]),  # bare numbers: first non-empty line only
        ("[ 1 ] > [ 2 ]", 2, [0, 1]),
        ("[4]", 4, [3, 0, 1, 2]),
    ],
)
def test_rankings_are_read_from_loose_replies(reply: str, k: int, order: list[int]) -> None:
    assert parse_ranking(reply, k) == order


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   \n ",
        "All of them look good to me.",
        "[7] > [9]",  # only out of range
        "The answer is 2.5 or 1.5",  # decimals are not candidate numbers
        "[x] > [y] > [z]",  # the format, copied without numbers
    ],
)
def test_unparseable_rankings_give_none(reply: str) -> None:
    assert parse_ranking(reply, 3) is None


def test_a_parsed_ranking_is_always_a_permutation() -> None:
    for reply in ["[3] > [3] > [9] > [1]", "2 2 2", "candidate 4, candidate 1", "[1]"]:
        order = parse_ranking(reply, 4)
        assert order is not None and sorted(order) == [0, 1, 2, 3]


def test_fallback_keeps_input_order_or_sorts_by_an_existing_score() -> None:
    pool = [
        Candidate(text="a", scores={"s": 0.1}),
        Candidate(text="b"),
        Candidate(text="c", scores={"s": 0.9}),
        Candidate(text="d", scores={"s": 0.1}),
    ]
    assert fallback_order(pool, None) == [0, 1, 2, 3]
    assert fallback_order(pool, "s") == [2, 0, 3, 1]  # highest first, stable, unscored last


# --- verdicts -------------------------------------------------------------------------------


def test_yes_probability_is_normalised_over_yes_and_no_variants() -> None:
    top = {" Yes": math.log(0.5), "Yes": math.log(0.1), " yes": math.log(0.1), " No": math.log(0.2),
           " The": math.log(0.05), " Not": math.log(0.05)}
    assert yes_probability(top) == pytest.approx(0.7 / 0.9)
    assert yes_probability({" No": -0.1, " I": -3.0}) == 0.0
    assert yes_probability({" YES ": -1.0}) == 1.0


@pytest.mark.parametrize("top", [{}, {" The": -0.1, " Not": -2.0}, {" Yesterday": -0.1, " Nope": -0.5}])
def test_no_yes_or_no_token_gives_none(top: dict[str, float]) -> None:
    assert yes_probability(top) is None


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("The steps add up.\nVerdict: Yes", True),
        ("**Verdict:** no, the sum is 9.", False),
        ("Verdict: No. Wait, I recheck. Verdict: YES", True),  # the last one counts
        ("verdict - yes", True),
        ("The answer is correct.", None),  # no verdict written
        ("", None),
        ("Verdict: maybe", None),
        ("Verdict: Nonsense", None),  # "No" must be a whole word
    ],
)
def test_written_verdicts(text: str, verdict: bool | None) -> None:
    assert written_verdict(text) is verdict


def test_the_verdict_cue_goes_on_its_own_line() -> None:
    assert verdict_reply("") == "Verdict:"
    assert verdict_reply("  \n") == "Verdict:"
    assert verdict_reply("3 + 4 = 7, right.  \n\n") == "3 + 4 = 7, right.\nVerdict:"


# --- critic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "critique"),
    [
        ("", None),
        ("  \n\t", None),
        ("Strengths:\n**Weaknesses:**", None),  # headings with nothing under them
        ("Strengths: adds correctly.\nWeaknesses: none", "Strengths: adds correctly.\nWeaknesses: none"),
        ("**Weaknesses:** wrong sum\n**Strengths:** clear", "Strengths: clear\nWeaknesses: wrong sum"),
        ("- Weakness: the carry is lost", "Strengths: not stated\nWeaknesses: the carry is lost"),
        ("Preamble. Strengths: short. Weaknesses: 3 + 4 is not 8.", "Strengths: short.\nWeaknesses: 3 + 4 is not 8."),
        ("The answer 8 is wrong; 3 + 4 = 7.", "The answer 8 is wrong; 3 + 4 = 7."),  # prose kept
    ],
)
def test_critiques_are_parsed_into_one_shape(reply: str, critique: str | None) -> None:
    assert parse_critique(reply) == critique


def test_long_critiques_and_candidates_keep_their_end() -> None:
    long = "x" * 5000 + " Answer: 7"
    assert clip(long).endswith("Answer: 7") and len(clip(long)) < 1600
    assert parse_critique("Weaknesses: " + long).endswith("Answer: 7")


def test_candidates_are_numbered_with_their_own_critiques() -> None:
    a, b = Candidate(text="A: 7"), Candidate(text="")
    a = a.model_copy(update={"critiques": {a.id: "fine", b.id: "not about a"}})
    shown = numbered([a, b], with_critiques=True)
    assert shown == "[1] A: 7\nCritique of [1]: fine\n\n[2] (empty)"
    assert "Critique" not in numbered([a, b])
