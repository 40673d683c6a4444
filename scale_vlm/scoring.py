"""Answer scoring: exact match after normalisation, with rules for option letters, numbers and short text.

Pure Python, shared by evaluation and the GRPO accuracy reward. The rules are tabled in ``docs/evaluation.md``:

* Text: Unicode NFKC, case-folded, punctuation dropped, articles (a, an, the) dropped, whitespace collapsed.
* Numbers: ``3``, ``3.0``, ``+3``, ``03``, ``1,000`` and the words ``zero`` .. ``twenty`` are the same number.
  Against a numeric gold, a number followed by one word (a unit or the counted noun: ``3 objects``, ``3 cm``)
  also counts; anything longer does not (``3 or 4`` is not ``3``).
* Option letters: ``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``B:``, ``option B``, and a letter followed by a
  separator and text (``B. cat``, ``(B) cat``, ``B) cat``). A letter outside the known choices is read as text.
* With choices known, the gold and the prediction are both resolved to an option (by letter or by the option's
  text) and compared as options: gold ``B`` matches ``dog`` when option B is ``dog``, and gold ``dog`` matches
  ``(B)``. ``B. cat`` whose text names a DIFFERENT option than its letter is contradictory and scores wrong.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from .prompts import OPTION_LETTERS

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
ARTICLES = frozenset({"a", "an", "the"})

# A number token: optional sign (not glued to a preceding word), thousands commas, decimals.
_TOKEN = re.compile(r"(?<![\w.])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])[+-]?\.\d+|\w+")
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
# "B", "(B)", "B.", "B)", "B:", optionally "option B" / "choice B"; and the same followed by text after a separator.
_LETTER_ALONE = re.compile(r"(?:option|choice)?\s*\(?\s*([a-z])\s*\)?\s*[.:)]?", re.IGNORECASE)
_LETTER_WITH_TEXT = re.compile(r"(?:option|choice)?\s*(?:\(\s*([a-z])\s*\)|([a-z])\s*[.:)])\s*(.+)", re.IGNORECASE | re.DOTALL)


def _canonical_number(token: str) -> str | None:
    if not _NUMBER.fullmatch(token):
        return None
    try:
        value = Decimal(token.replace(",", "").lstrip("+"))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"  # also -0 and 0.000
    text = format(value.normalize(), "f")
    return text


def _tokens(text: str) -> list[str]:
    # NFKC folds full-width and compatibility forms; the Unicode minus sign is not folded by it.
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2212", "-")
    out = []
    for token in _TOKEN.findall(text):
        number = _canonical_number(token)
        if number is not None:
            out.append(number)
        elif token in NUMBER_WORDS:
            out.append(str(NUMBER_WORDS[token]))
        elif token not in ARTICLES and token != "_":
            out.append(token.strip("_"))
    return [t for t in out if t]


def normalize_answer(text: str) -> str:
    """Canonical form for exact matching: NFKC, case-folded, no punctuation or articles, canonical numbers,
    single spaces. ``"  The Dog! "`` -> ``"dog"``, ``"3.0"`` -> ``"3"``, ``"three"`` -> ``"3"``."""
    return " ".join(_tokens(text))


def parse_number(text: str) -> Decimal | None:
    """The number ``text`` states, alone or followed by one word (``"3 objects"``); None otherwise."""
    tokens = _tokens(text)
    if not 1 <= len(tokens) <= 2 or _canonical_number(tokens[0]) is None:
        return None
    if len(tokens) == 2 and not tokens[1].isalpha():
        return None
    return Decimal(tokens[0])


def option_letter(text: str, num_choices: int | None = None) -> tuple[str, str] | None:
    """``(letter, trailing text)`` when ``text`` names an option by letter, else None.

    ``"(b)"`` -> ``("B", "")``, ``"B. cat"`` -> ``("B", "cat")``. With ``num_choices`` given, letters past the
    last option are not letters. A lone letter needs no separator; a letter followed by text does (so the article
    in ``"a cat"`` is not option A)."""
    text = unicodedata.normalize("NFKC", text).strip()
    match = _LETTER_ALONE.fullmatch(text)
    if match:
        letter, rest = match.group(1).upper(), ""
    else:
        match = _LETTER_WITH_TEXT.fullmatch(text)
        if not match:
            return None
        letter, rest = (match.group(1) or match.group(2)).upper(), match.group(3).strip()
    if num_choices is not None and OPTION_LETTERS.index(letter) >= num_choices:
        return None
    return letter, rest


def _option_by_text(text: str, choices: Sequence[str]) -> int | None:
    norm = normalize_answer(text)
    if not norm:
        return None
    for i, choice in enumerate(choices):
        if normalize_answer(str(choice)) == norm:
            return i
    return None


def resolve_option(text: str, choices: Sequence[str]) -> int | None:
    """Index of the option ``text`` names (by letter, letter + text, or the option's own text), else None.
    A letter whose trailing text names a different option is contradictory and resolves to None."""
    if not choices:
        return None
    by_letter = option_letter(text, len(choices))
    if by_letter is not None:
        index = OPTION_LETTERS.index(by_letter[0])
        if by_letter[1]:
            named = _option_by_text(by_letter[1], choices)
            if named is not None and named != index:
                return None
        return index
    return _option_by_text(text, choices)


def score_answer(prediction: str | None, gold: str, choices: Sequence[str] | None = None) -> bool:
    """True when ``prediction`` is the ``gold`` answer under the normalisation rules (module docstring)."""
    if prediction is None:
        return False
    gold = str(gold)
    if not gold.strip():
        raise ValueError("score_answer: the gold answer is empty")
    choices = list(choices or [])
    if choices:
        gold_index = resolve_option(gold, choices)
        if gold_index is not None:
            return resolve_option(prediction, choices) == gold_index
    gold_letter = option_letter(gold) if len(gold.strip().strip("().:")) == 1 else None
    if gold_letter is not None and gold.strip().strip("().:").isalpha():
        predicted = option_letter(prediction)
        return predicted is not None and predicted[0] == gold_letter[0]
    gold_number = parse_number(gold)
    if gold_number is not None:
        predicted_number = parse_number(prediction)
        return predicted_number is not None and predicted_number == gold_number
    return normalize_answer(prediction) == normalize_answer(gold)
