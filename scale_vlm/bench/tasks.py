"""Task families of the built-in benchmark: each samples a scene for a balanced target answer, asks a question,
and writes a teacher-style ``<think>`` trace plus the gold short answer.

Design rules (see docs/benchmark.md):
- the answer is sampled first and the scene built around it, so gold answers are balanced;
- with option letters, the trace ends with the *value* (``so the answer is 3``) and the scored answer is the
  letter of the option holding it, a lookup the trace never spells out;
- teacher errors corrupt one detail of the trace that the question does not depend on (a wrong colour or shape
  on an unrelated object), so traces are imperfect while gold answers stay correct.

Two trace styles for the task steps after the scan:
- ``lookup`` (default): the teacher names the matching cells directly (``red objects: top left and middle
  right.``), which asks the student to retrieve a cell name from the scan several tokens before the attribute that
  identifies it;
- ``walkthrough``: the teacher goes through the scanned objects one by one and marks each that matters (``red
  objects: top left red circle, count 1; top centre blue square; ...``), so every step depends only on the object
  just written and the previous mark. It did not train faster on the tiny model (docs/benchmark.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..prompts import OPTION_LETTERS
from .prose import OPTION_LINES, RECHECK_LINES, REPEATS, SCAN_INTROS, Voice
from .scenes import COLOURS, SHAPES, Obj, Scene, cell_name, free_cells

TASKS = ("count", "attribute", "spatial", "compare")
SCAN_INTRO = SCAN_INTROS[0]  # trace phrases, also read back by scripts/trace_diagnostics.py
CONCLUSION = "So the answer is"
RELATIONS = ("left of", "right of", "above", "below")
TRACE_STYLES = ("lookup", "walkthrough")
SCAN_ORDERS = ("cell_first", "object_first")


@dataclass
class Item:
    """One generated question before rendering."""

    category: str
    scene: Scene
    question: str
    choices: list[str]  # [] when the answer is free-form (a number or a word)
    value: str  # the answer as the trace concludes it (a number, word or phrase)
    answer: str  # the scored gold answer: an option letter when choices are given, else ``value``
    restate: str  # verbosity >= 1: what the question asks, in the teacher's words
    reasoning: list[str]  # task-specific steps after the scan ("lookup" style)
    walkthrough: Callable[[Scene], list[str]]  # the same steps, object by object over the scanned scene
    safe_attr: str  # attribute a teacher error may corrupt without changing the answer ("colour" | "shape")
    protected: set[int] = field(default_factory=set)  # cells a teacher error must not touch
    hedge: str = ""  # trace_entropy > 0: the task's own self-check sentence (bench/prose.py)


def noun_phrase(kind: str, value: str) -> str:
    return f"{value} objects" if kind == "colour" else f"{value}s"


def _other(kind: str) -> str:
    return "shape" if kind == "colour" else "colour"


def _values(kind: str) -> tuple[str, ...]:
    return COLOURS if kind == "colour" else SHAPES


def _make_obj(cell: int, kind: str, value: str, rng: random.Random, other_values=None) -> Obj:
    other = rng.choice(other_values or _values(_other(kind)))
    return Obj(cell, value, other) if kind == "colour" else Obj(cell, other, value)


def cell_list(objs) -> str:
    names = [cell_name(o.cell) for o in sorted(objs, key=lambda o: o.cell)]
    if not names:
        return "none"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _count_lines(kind: str, value: str, scene: Scene) -> tuple[list[str], int]:
    objs = [o for o in scene.objects if getattr(o, kind) == value]
    return [f"{noun_phrase(kind, value)}: {cell_list(objs)}.", f"That makes {len(objs)}."], len(objs)


def _count_walk(kind: str, value: str, scene: Scene) -> list[str]:
    """``red objects: top left red circle, count 1; top centre blue square; ... That makes N.``"""
    items, n = [], 0
    for o in scene.objects:
        if getattr(o, kind) == value:
            n += 1
            items.append(f"{cell_name(o.cell)} {o.describe()}, count {n}")
        else:
            items.append(f"{cell_name(o.cell)} {o.describe()}")
    return [f"{noun_phrase(kind, value)}: {'; '.join(items)}.", f"That makes {n}."]


def count_task(rng: random.Random, letters: bool, max_objects: int) -> Item:
    kind = rng.choice(("colour", "shape"))
    value = rng.choice(_values(kind))
    max_gold = min(5, max_objects)
    if letters:
        slot = rng.randrange(4)  # letter first: uniform letters
        gold = rng.randint(min(slot, max_gold), max_gold)
        start = gold - slot
        if start < 0:  # only when max_objects < 3
            start, slot = 0, gold
        choices = [str(start + i) for i in range(4)]
    else:
        gold = rng.randint(0, max_gold)
    cells = free_cells([], rng, gold)
    objs = [_make_obj(c, kind, value, rng) for c in cells]
    k = rng.randint(max(0, 1 - gold), max(max(0, 1 - gold), max_objects - gold))
    others = [v for v in _values(kind) if v != value]
    objs += [_make_obj(c, kind, rng.choice(others), rng) for c in free_cells(cells, rng, k)]
    scene = Scene.of(objs)
    noun = noun_phrase(kind, value)
    lines, n = _count_lines(kind, value, scene)
    assert n == gold
    return Item(
        category="count", scene=scene, question=f"How many {noun} are in the image?",
        choices=choices if letters else [], value=str(gold),
        answer=OPTION_LETTERS[slot] if letters else str(gold),
        restate=f"I need to count the {noun}.", reasoning=lines,
        walkthrough=lambda seen: _count_walk(kind, value, seen), safe_attr=_other(kind),
        hedge=f"Hmm, I should make sure I did not miss any {noun}.",
    )


def attribute_task(rng: random.Random, letters: bool, max_objects: int) -> Item:
    asked = rng.choice(("colour", "shape"))  # the attribute asked for
    key_kind = _other(asked)  # the attribute that identifies the unique object
    if asked == "colour" and letters:
        # 3 of the 4 colours in canonical order; sample the letter first so letters are balanced.
        slot = rng.randrange(3)
        feasible = [i for i in range(4) if slot <= i and 2 - slot <= 3 - i]
        gi = rng.choice(feasible)
        before = rng.sample(range(gi), slot)
        after = rng.sample(range(gi + 1, 4), 2 - slot)
        choices = [COLOURS[i] for i in sorted(before + [gi] + after)]
        gold = COLOURS[gi]
    else:
        gold = rng.choice(_values(asked))
        choices = list(_values(asked))
        slot = choices.index(gold)
    key = rng.choice(_values(key_kind))
    target_cell = rng.randrange(9)
    target = Obj(target_cell, gold, key) if asked == "colour" else Obj(target_cell, key, gold)
    k = rng.randint(0, max(0, max_objects - 1))
    others = [v for v in _values(key_kind) if v != key]
    objs = [target] + [_make_obj(c, key_kind, rng.choice(others), rng) for c in free_cells([target_cell], rng, k)]
    scene = Scene.of(objs)
    if asked == "colour":
        question, restate = f"What colour is the {key}?", f"I need the colour of the {key}."
        name, verdict = f"The only {key}", f"It is {gold}."
    else:
        question, restate = f"What shape is the {key} object?", f"I need the shape of the {key} object."
        name, verdict = f"The only {key} object", f"It is a {gold}."
    reasoning = [f"{name} is at {cell_name(target_cell)}.", verdict]

    def walk(seen: Scene) -> list[str]:
        # objects in scan order up to the one with the key attribute: ``The only circle: top left green square;
        # top right green circle, found. It is green.``
        items = []
        for o in seen.objects:
            if getattr(o, key_kind) == key:
                items.append(f"{cell_name(o.cell)} {o.describe()}, found")
                break
            items.append(f"{cell_name(o.cell)} {o.describe()}")
        return [f"{name}: {'; '.join(items)}.", verdict]
    return Item(
        category="attribute", scene=scene, question=question, choices=choices if letters else [], value=gold,
        answer=OPTION_LETTERS[slot] if letters else gold, restate=restate, reasoning=reasoning, walkthrough=walk,
        safe_attr=asked, protected={target_cell},
        hedge=f"Hmm, I should make sure there is only one {key}{' object' if asked == 'shape' else ''}.",
    )


def spatial_task(rng: random.Random, letters: bool, max_objects: int) -> Item:
    slot = rng.randrange(4)
    relation = RELATIONS[slot]
    line = rng.randrange(3)
    a, b = sorted(rng.sample(range(3), 2))  # a < b along the row or column
    if relation in ("left of", "right of"):
        first, second = (line * 3 + a, line * 3 + b) if relation == "left of" else (line * 3 + b, line * 3 + a)
    else:
        first, second = (a * 3 + line, b * 3 + line) if relation == "above" else (b * 3 + line, a * 3 + line)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    p1, p2 = rng.sample(pairs, 2)
    o1, o2 = Obj(first, *p1), Obj(second, *p2)
    rest = [p for p in pairs if p not in (p1, p2)]
    k = rng.randint(0, max(0, max_objects - 2))
    objs = [o1, o2] + [Obj(c, *rng.choice(rest)) for c in free_cells([first, second], rng, k)]
    scene = Scene.of(objs)
    d1, d2 = o1.describe(), o2.describe()

    def rc(o):
        return f"row {o.row + 1} column {o.col + 1}"

    if relation in ("left of", "right of"):
        cmp = "less" if relation == "left of" else "greater"
        step = f"Same row, and column {o1.col + 1} is {cmp} than column {o2.col + 1}."
    else:
        cmp = "less" if relation == "above" else "greater"
        step = f"Same column, and row {o1.row + 1} is {cmp} than row {o2.row + 1}."
    conclusion = f"So the {d1} is {relation} the {d2}."
    reasoning = [f"The {d1} is at {cell_name(first)}, {rc(o1)}.", f"The {d2} is at {cell_name(second)}, {rc(o2)}.", step,
                 conclusion]

    def walk(seen: Scene) -> list[str]:
        # ``The red circle and the blue square: top left red circle, found at row 1 column 1; middle centre ...``
        items = []
        for o in seen.objects:
            item = f"{cell_name(o.cell)} {o.describe()}"
            items.append(f"{item}, found at {rc(o)}" if o.cell in (first, second) else item)
        return [f"The {d1} and the {d2}: {'; '.join(items)}.", step, conclusion]
    return Item(
        category="spatial", scene=scene, question=f"Where is the {d1} relative to the {d2}?",
        choices=list(RELATIONS) if letters else [], value=relation,
        answer=OPTION_LETTERS[slot] if letters else relation,
        restate=f"I need to find where the {d1} is relative to the {d2}.", reasoning=reasoning, walkthrough=walk,
        safe_attr="colour", protected={first, second},
        hedge=f"Hmm, I should make sure I have the right {d1} and {d2}.",
    )


def compare_task(rng: random.Random, letters: bool, max_objects: int) -> Item:
    kind = rng.choice(("colour", "shape"))
    p, q = rng.sample(_values(kind), 2)
    slot = rng.randrange(3)  # 0: more p, 1: more q, 2: same
    cap = max(1, min(3, max_objects // 2))
    if slot == 2:
        n_p = n_q = rng.randint(1, cap)
    else:
        hi = rng.randint(1, min(4, max_objects - 0))
        lo = rng.randint(0, min(hi - 1, max_objects - hi))
        n_p, n_q = (hi, lo) if slot == 0 else (lo, hi)
    cells = free_cells([], rng, n_p + n_q)
    objs = [_make_obj(c, kind, p, rng) for c in cells[:n_p]] + [_make_obj(c, kind, q, rng) for c in cells[n_p:]]
    others = [v for v in _values(kind) if v not in (p, q)]
    k = rng.randint(0, max(0, max_objects - n_p - n_q))
    objs += [_make_obj(c, kind, rng.choice(others), rng) for c in free_cells(cells, rng, k)]
    scene = Scene.of(objs)
    np_, nq_ = noun_phrase(kind, p), noun_phrase(kind, q)
    choices = [f"more {np_}", f"more {nq_}", "the same number"]
    lines_p, cp = _count_lines(kind, p, scene)
    lines_q, cq = _count_lines(kind, q, scene)
    assert (cp, cq) == (n_p, n_q)
    if slot == 2:
        verdict = f"{cp} equals {cq}."
    else:
        verdict = f"{max(cp, cq)} is more than {min(cp, cq)}."
    return Item(
        category="compare", scene=scene, question=f"Are there more {np_} or more {nq_}?",
        choices=choices if letters else [], value=choices[slot],
        answer=OPTION_LETTERS[slot] if letters else choices[slot],
        restate=f"I need to compare the number of {np_} and {nq_}.", reasoning=lines_p + lines_q + [verdict],
        walkthrough=lambda seen: _count_walk(kind, p, seen) + _count_walk(kind, q, seen) + [verdict],
        safe_attr=_other(kind), hedge=f"Hmm, I should make sure I did not miss any {np_} or {nq_}.",
    )


TASK_FNS = {"count": count_task, "attribute": attribute_task, "spatial": spatial_task, "compare": compare_task}


def corrupt_scene(item: Item, rng: random.Random) -> Scene | None:
    """A copy of the scene with one unrelated detail wrong (what a teacher's scan may get wrong), or None when
    no object can be changed without touching the answer."""
    objs = list(item.scene.objects)
    protected_pairs = {(o.colour, o.shape) for o in objs if o.cell in item.protected}
    candidates = [i for i, o in enumerate(objs) if o.cell not in item.protected]
    rng.shuffle(candidates)
    for i in candidates:
        o = objs[i]
        current = getattr(o, item.safe_attr)
        options = [v for v in _values(item.safe_attr) if v != current]
        rng.shuffle(options)
        for v in options:
            new = Obj(o.cell, v, o.shape) if item.safe_attr == "colour" else Obj(o.cell, o.colour, v)
            if (new.colour, new.shape) not in protected_pairs:
                objs[i] = new
                return Scene.of(objs)
    return None


def write_trace(item: Item, verbosity: int, scanned: Scene, style: str = "lookup", scan_order: str = "cell_first",
                repeat: int = 0, voice: Voice | None = None) -> str:
    """The teacher's reasoning. ``scanned`` is the scene as the teacher saw it (possibly with one error);
    ``style`` is one of ``TRACE_STYLES`` (the task steps after the scan, see the module docstring);
    ``scan_order`` is one of ``SCAN_ORDERS``: each scanned object as ``top left red circle`` (the base stage's
    caption) or ``red circle at top left``, where the cell follows the object it belongs to.

    verbosity 0: scan + task steps + conclusion; 1 (default): + restated goal and a second scan that double-checks;
    2: + a cell-by-cell pass that names the empty cells too. ``repeat``: that many more passes of scan + task steps
    after the first. ``voice`` (``bench/prose.py``, level ``trace_entropy``) words each sentence and inserts
    observations, self-checks and hedges; without one (or at level 0) the trace is the templated one.
    """
    if style not in TRACE_STYLES:
        raise ValueError(f"unknown trace style {style!r}; choose from {', '.join(TRACE_STYLES)}")
    if scan_order not in SCAN_ORDERS:
        raise ValueError(f"unknown scan order {scan_order!r}; choose from {', '.join(SCAN_ORDERS)}")
    voice = voice or Voice()
    say = voice.say

    def steps() -> list[str]:
        # the walk-through reads the scene as scanned: a teacher error stays consistent within the trace (it only
        # ever touches an attribute the steps do not test)
        return [say(s) for s in (item.walkthrough(scanned) if style == "walkthrough" else item.reasoning)]

    parts: list[str] = []
    slots: list[int] = []  # positions (in parts) where an inserted sentence may go
    if verbosity >= 1:
        parts.append(say(item.restate))
        slots.append(len(parts))  # never before the first sentence: diagnostics compare it with the restated goal
    parts.append(f"{voice.pick(SCAN_INTROS)} {scanned.caption(scan_order)}")
    if verbosity >= 2:
        cells = []
        for c in range(9):
            o = scanned.at(c)
            cells.append(f"{cell_name(c)} {o.describe() if o else 'empty'}")
        parts.append("Cell by cell: " + ", ".join(cells) + ".")
    first = steps()
    parts.append(first[0])  # right after the scan (or the cell-by-cell pass): diagnostics read it as the first step
    for s in first[1:]:
        slots.append(len(parts))
        parts.append(s)
    for _ in range(repeat):
        slots.append(len(parts))
        parts.append(f"{voice.pick(REPEATS)} {scanned.caption(scan_order)}")
        parts.extend(steps())
    slots.append(len(parts))
    if verbosity >= 1:
        parts.append(voice.pick(RECHECK_LINES).format(cap=scanned.caption(scan_order)))
        slots.append(len(parts))
        if item.choices:
            parts.append(voice.pick(OPTION_LINES))
            slots.append(len(parts))
    extras = voice.extras(item.hedge, item.scene, scanned)
    for sentence, at in sorted(((s, voice.pick(slots)) for s in extras), key=lambda x: -x[1]):
        parts.insert(at, sentence)  # from the last slot back, so the earlier positions stay valid
    lead = voice.lead_in()
    if lead:
        parts.append(lead)
    parts.append(f"{CONCLUSION} {item.value}.")
    return " ".join(parts)
