"""Answer scoring: a table of (prediction, gold, choices) -> correct, and normalisation examples."""

from __future__ import annotations

import pytest

from scale_vlm.parsing import parse_output
from scale_vlm.scoring import normalize_answer, option_letter, parse_number, resolve_option, score_answer

ANIMALS = ["dog", "cat", "three apples"]
NUMBERS = ["1", "2", "3", "4"]

CASES = [
    # option letters, gold a letter, choices unknown
    ("B", "B", None, True),
    ("b", "B", None, True),
    ("(B)", "B", None, True),
    ("( b )", "B", None, True),
    ("B.", "B", None, True),
    ("B)", "B", None, True),
    ("B:", "B", None, True),
    ("option B", "B", None, True),
    ("B. cat", "B", None, True),
    ("A", "B", None, False),
    ("AB", "B", None, False),
    ("Ｂ", "B", None, True),  # full-width letter, NFKC
    # option letters with choices known
    ("B. cat", "B", ANIMALS, True),
    ("(B) cat", "B", ANIMALS, True),
    ("B) cat", "B", ANIMALS, True),
    ("B. dog", "B", ANIMALS, False),  # letter and text name different options: contradictory
    ("cat", "B", ANIMALS, True),  # the option's text
    ("  Cat. ", "B", ANIMALS, True),
    ("a cat", "B", ANIMALS, True),  # the article is not option A
    ("dog", "B", ANIMALS, False),
    ("D", "B", ANIMALS, False),  # past the last option
    ("3 apples", "C", ANIMALS, True),  # number words inside option text
    # gold given as the option text
    ("B", "cat", ANIMALS, True),
    ("(B) cat", "cat", ANIMALS, True),
    ("A", "cat", ANIMALS, False),
    # numeric options
    ("C", "3", NUMBERS, True),
    ("three", "C", NUMBERS, True),
    ("3.0", "C", NUMBERS, True),
    ("4", "C", NUMBERS, False),
    # numbers
    ("3", "3", None, True),
    ("3.0", "3", None, True),
    ("3.50", "3.5", None, True),
    ("+3", "3", None, True),
    ("03", "3", None, True),
    ("three", "3", None, True),
    ("Three", "3", None, True),
    ("twenty", "20", None, True),
    ("3 objects", "3", None, True),
    ("three squares", "3", None, True),
    ("3 or 4", "3", None, False),
    ("there are 3 squares", "3", None, False),
    ("4", "3", None, False),
    ("-3", "3", None, False),
    ("\u22122", "-2", None, True),  # Unicode minus sign
    ("１０", "10", None, True),  # full-width digits, NFKC
    ("1,000", "1000", None, True),
    ("0.0", "0", None, True),
    # short text
    ("  The   Big Dog!! ", "big dog", None, True),
    ("left of", "Left of.", None, True),
    ("an apple", "apple", None, True),
    ("Café", "CAFÉ", None, True),
    ("ﬁsh", "fish", None, True),  # ligature, NFKC
    ("big\u00a0dog", "big dog", None, True),  # no-break space
    ("red", "blue", None, False),
    ("", "blue", None, False),
    (None, "B", ANIMALS, False),  # nothing to score
]


@pytest.mark.parametrize("prediction, gold, choices, expected", CASES)
def test_score_answer_table(prediction, gold, choices, expected):
    assert score_answer(prediction, gold, choices) is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  The Dog! ", "dog"),
        ("3.0", "3"),
        ("3.50", "3.5"),
        ("three", "3"),
        ("+1,000 objects", "1000 objects"),
        ("A cat, a DOG.", "cat dog"),
        ("Ünïcode   ✓", "ünïcode"),
        ("-0", "0"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_helpers():
    assert option_letter("(c) dog") == ("C", "dog")
    assert option_letter("a cat") is None
    assert option_letter("E", num_choices=3) is None
    assert resolve_option("B", ANIMALS) == 1
    assert resolve_option("three apples", ANIMALS) == 2
    assert resolve_option("horse", ANIMALS) is None
    assert parse_number("3 cm") == 3
    assert parse_number("3 4") is None


def test_bare_reply_is_scored_but_malformed():
    parsed = parse_output("(B) cat")
    assert parsed.malformed
    assert score_answer(parsed.answer, "B", ANIMALS)


def test_tagged_reply_scored_through_the_parser():
    parsed = parse_output("<think>it meows</think><answer>B</answer>")
    assert not parsed.malformed and score_answer(parsed.answer, "cat", ANIMALS)


def test_empty_gold_is_an_error():
    with pytest.raises(ValueError, match="gold answer is empty"):
        score_answer("B", "  ")
