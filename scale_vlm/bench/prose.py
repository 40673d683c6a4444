"""Varied wording for the teacher traces (``BenchConfig.trace_entropy``): paraphrases of every templated sentence,
answer-irrelevant observations, hedges and self-checks, drawn from a random stream of their own.

Why: the templated traces become nearly deterministic for the student (think loss ~0.2), while distilled reasoning
traces keep an irreducible per-token loss. The levels add that irreducible part while the scene, the question, the
task steps' content and the conclusion stay those of level 0:

- 0: today's templates, nothing drawn (``Voice.level == 0`` takes the first phrasing of every list);
- 1: each templated sentence in one of several phrasings (the first being today's), at most one observation and
  at most one self-check, and sometimes a sentence leading in to the conclusion;
- 2: as 1, plus 1-3 observations, 1-2 self-checks, up to 2 filler hedges and always a lead-in.

Every observation is a true statement about the scene's *occupancy* or its rendering (empty cells, empty or full
rows and columns, the background, equal sizes), which a teacher error (a wrong colour or shape) never changes and
no question depends on. Self-checks re-read a row or a column of the scene *as scanned*, so a trace with a teacher
error stays self-consistent. The conclusion ``So the answer is X.`` is never paraphrased and never appears earlier
(``diagnostics.VALUE`` reads it), and nothing is inserted between the scan and the first task step or before the
first sentence (``diagnostics`` checks both).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from .scenes import COLOURS, COLS, GRID, ROWS, SHAPES, Scene, cell_name

ENTROPY_LEVELS = (0, 1, 2)

# the scan intro's phrasings; the first is tasks.SCAN_INTRO (diagnostics accept them all)
SCAN_INTROS = ("I scan the grid row by row:", "Going through the grid row by row:", "Reading the grid row by row:",
               "Row by row, the grid holds:", "Starting at the top, row by row, I see:")
RECHECK_LINES = ("Let me check the grid once more: {cap} This agrees with what I found.",
            "Checking the grid again: {cap} That matches what I found.",
            "One more look at the grid: {cap} Nothing has changed.",
            "To be safe, I scan it again: {cap} It agrees.")
OPTION_LINES = ("Now I compare this with the options.", "Next I compare it to the options.",
           "I compare this against each option.", "Now I compare it with each option.")
REPEATS = ("Let me go through it again:", "Once more, step by step:", "I will redo it to be sure:",
           "Going over it again:")
LEAD_INS = ("That settles it.", "Everything is consistent.", "I am confident now.", "Nothing contradicts this.")
FILLERS = ("Hmm.", "Let me think.", "I think that is right.", "Let me be careful here.", "OK.",
           "Let me look at the whole image first.")

_CELL = rf"(?:{'|'.join(ROWS)}) (?:{'|'.join(COLS)})"
_CELLS = rf"{_CELL}(?:(?:, | and ){_CELL})*"
# (pattern of a templated sentence, its phrasings): the first phrasing rebuilds the sentence exactly; every phrasing
# keeps the content words (cells, colours, shapes, numbers, relations) in the same order, which is what
# ``diagnostics.content_key`` compares for paraphrased traces
SENTENCES = [
    (r"(?P<noun>[a-z]+ objects|[a-z]+s): none\.",
     ("{noun}: none.", "The {noun}: none at all.", "Of the {noun} I see none.", "{noun} in the grid: none.")),
    (rf"(?P<noun>[a-z]+ objects|[a-z]+s): (?P<cells>{_CELLS})\.",
     ("{noun}: {cells}.", "The {noun} are at {cells}.", "I find {noun} at {cells}.", "{noun} sit at {cells}.")),
    (r"That makes (?P<n>\d+)\.", ("That makes {n}.", "That is {n} in total.", "So there are {n} of them.",
                                  "{n} in all.")),
    (rf"The only (?P<key>[a-z]+(?: object)?) is at (?P<cell>{_CELL})\.",
     ("The only {key} is at {cell}.", "There is one {key}, at {cell}.", "I find the only {key} at {cell}.",
      "The single {key} sits at {cell}.")),
    (r"It is (?P<v>a [a-z]+|[a-z]+)\.", ("It is {v}.", "That one is {v}.", "Looking at it, it is {v}.")),
    (rf"The (?P<d>[a-z]+ [a-z]+) is at (?P<cell>{_CELL}), (?P<rc>row \d column \d)\.",
     ("The {d} is at {cell}, {rc}.", "I find the {d} at {cell}, which is {rc}.", "The {d} sits at {cell}, that is {rc}.")),
    (r"Same (?P<axis>row|column), and (?P<rest>[a-z0-9 ]+)\.",
     ("Same {axis}, and {rest}.", "They share a {axis}, and {rest}.", "Both are in the same {axis}, and {rest}.")),
    (r"So the (?P<a>[a-z]+ [a-z]+) is (?P<rel>left of|right of|above|below) the (?P<b>[a-z]+ [a-z]+)\.",
     ("So the {a} is {rel} the {b}.", "This means the {a} is {rel} the {b}.", "Hence the {a} is {rel} the {b}.",
      "That puts the {a} {rel} the {b}.")),
    (r"(?P<a>\d+) is more than (?P<b>\d+)\.", ("{a} is more than {b}.", "{a} is greater than {b}.",
                                               "{a} beats {b}.")),
    (r"(?P<a>\d+) equals (?P<b>\d+)\.", ("{a} equals {b}.", "{a} is the same as {b}.", "{a} and {b} are equal.")),
    # the restated goal
    (r"I need to (?P<x>[a-z ]+)\.", ("I need to {x}.", "The question asks me to {x}.", "My task is to {x}.",
                                     "I have to {x}.")),
    (r"I need (?P<x>the [a-z ]+)\.", ("I need {x}.", "The question asks for {x}.", "I am looking for {x}.",
                                      "What is wanted is {x}.")),
]
SENTENCES = [(re.compile(p), forms) for p, forms in SENTENCES]


def sentence_forms(sentence: str) -> list[str]:
    """All phrasings of a templated sentence (the sentence itself first), or ``[sentence]`` when no template
    matches (walk-through steps keep their wording)."""
    for pattern, forms in SENTENCES:
        m = pattern.fullmatch(sentence)
        if m:
            return [f.format(**m.groupdict()) for f in forms]
    return [sentence]


@dataclass
class Voice:
    """The wording decisions of one trace. ``bits`` adds up the entropy of every decision drawn (uniform choices,
    coin flips, slots): an upper bound on the entropy of the trace text given the item."""

    level: int = 0
    rng: random.Random | None = None
    same_size: bool = True  # rendering facts an observation may state (BenchConfig.size_jitter == 0)
    centred: bool = True  # BenchConfig.jitter == 0
    bits: float = field(default=0.0)

    def pick(self, options):
        if self.level == 0:
            return options[0]
        self.bits += math.log2(len(options))
        return self.rng.choice(options)

    def randint(self, lo: int, hi: int) -> int:
        self.bits += math.log2(hi - lo + 1)
        return self.rng.randint(lo, hi)

    def sample(self, options, k: int) -> list:
        k = min(k, len(options))
        self.bits += math.log2(math.comb(len(options), k)) + math.log2(math.factorial(k))
        return self.rng.sample(options, k)

    def say(self, sentence: str) -> str:
        """One templated sentence in one of its phrasings."""
        return self.pick(sentence_forms(sentence)) if self.level else sentence

    def extras(self, item_hedge: str, true_scene: Scene, scanned: Scene) -> list[str]:
        """The sentences this trace inserts (observations, self-checks, fillers), in drawing order."""
        if self.level == 0:
            return []
        if self.level == 1:
            n_obs, n_checks, n_fill = self.randint(0, 1), self.randint(0, 1), 0
        else:
            n_obs, n_checks, n_fill = self.randint(1, 3), self.randint(1, 2), self.randint(0, 2)
        out = self.sample(observations(true_scene, self.same_size, self.centred), n_obs)
        out += self.sample(self_checks(item_hedge, scanned), n_checks)
        out += [self.pick(FILLERS) for _ in range(n_fill)]
        return out

    def lead_in(self) -> str | None:
        """A sentence before ``So the answer is``: sometimes at level 1, always at level 2."""
        if self.level == 0:
            return None
        return self.pick(LEAD_INS if self.level >= 2 else (None, *LEAD_INS))


def _rows_cols():
    for r, name in enumerate(ROWS):
        yield f"{name} row", [r * GRID + c for c in range(GRID)]
    for c, name in enumerate(COLS):
        yield f"{name} column", [r * GRID + c for r in range(GRID)]


def observations(scene: Scene, same_size: bool = True, centred: bool = True) -> list[str]:
    """True statements about the scene that no question depends on: occupancy and rendering only, so a teacher
    error (a wrong attribute) cannot make them false."""
    occupied = {o.cell for o in scene.objects}
    empty = [c for c in range(GRID * GRID) if c not in occupied]
    out = ["The background is plain white.", "The grid has three rows and three columns."]
    if empty:
        out.append(f"{len(empty)} of the nine cells are empty.")
    out += [f"The {cell_name(c)} cell is empty." for c in empty]
    for name, cells in _rows_cols():
        if not occupied & set(cells):
            out.append(f"The {name} is empty.")
        elif set(cells) <= occupied:
            out.append(f"The {name} is full.")
    for o in scene.objects:
        for d in (-GRID, GRID, -1, 1):  # orthogonal neighbours inside the grid
            n = o.cell + d
            if 0 <= n < GRID * GRID and (abs(d) == GRID or n // GRID == o.cell // GRID) and n not in occupied:
                out.append(f"Next to the object at {cell_name(o.cell)}, the {cell_name(n)} cell is empty.")
    if same_size and len(scene.objects) > 1:
        out.append("All the shapes are the same size.")
    if centred and scene.objects:
        out.append("Each shape sits in the middle of its cell.")
    return out


def self_checks(item_hedge: str, scanned: Scene) -> list[str]:
    """Re-reads of one row or column of the scene as scanned, and the task's own hedge."""
    out = [item_hedge] if item_hedge else []
    for name, cells in _rows_cols():
        seen = ", ".join(f"{cell_name(c)} {o.describe() if (o := scanned.at(c)) else 'empty'}" for c in cells)
        out.append(f"Wait, let me re-check the {name}: {seen}. Yes, that matches.")
    return out


# what ``content_key`` keeps of a sentence: the words a paraphrase may not change
_CONTENT = re.compile(
    rf"\b(?:{_CELL}|{'|'.join(COLOURS)}|{'|'.join(SHAPES)}|\d+|left of|right of|above|below|none|count|colour"
    r"|shape|compare)\b")


def content_key(sentence: str | None) -> tuple[str, ...] | None:
    """The content words of a sentence in order (cells, colours, shapes, numbers, relations, the task's verb):
    equal for two phrasings of one templated sentence."""
    if sentence is None:
        return None
    for shape in SHAPES:  # "circles: ..." and "the circle" name the same thing
        sentence = sentence.replace(f"{shape}s", shape)
    return tuple(m.group(0) for m in _CONTENT.finditer(sentence))
