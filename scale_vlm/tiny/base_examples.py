"""The example kinds of the base stage (:mod:`scale_vlm.tiny.base_stage`), written from the benchmark's scenes and
task families: captions, option lookups and, off by default, direct answers and reading questions.

Each generator draws from the random generator it is given, in a fixed order: the shipped base was trained on the
stream they produce, so a change here changes what ``scale-vlm build-base`` rebuilds.
"""

from __future__ import annotations

import random

from ..bench.dataset import make_prompt
from ..bench.scenes import COLOURS, GRID, SHAPES, Scene, cell_name, random_scene
from ..bench.tasks import RELATIONS, TASK_FNS, TASKS, cell_list, noun_phrase
from ..prompts import OPTION_LETTERS, format_options

CONTEXT_CAPTION_INSTRUCTION = "First list the objects in the grid."  # captioning after a benchmark question


def caption_prompt() -> str:
    return "List the objects in the grid."


def lookup_example(rng: random.Random) -> tuple[str, str]:
    """A text-only option lookup (value -> letter), the skill option-letter answers need (base stage)."""
    kind = rng.randrange(4)
    if kind == 0:
        start = rng.randint(0, 5)
        choices = [str(start + i) for i in range(4)]
    elif kind == 1:
        keep = set(rng.sample(COLOURS, 3))
        choices = [c for c in COLOURS if c in keep]
    elif kind == 2:
        choices = list(SHAPES)
    else:
        choices = list(RELATIONS)
    slot = rng.randrange(len(choices))
    prompt = f"Options: {format_options(choices)}. Which option is {choices[slot]}?"
    return prompt, OPTION_LETTERS[slot]


DIRECT_INSTRUCTION = "Answer directly."


def direct_qa_example(rng: random.Random, letter_fraction: float = 0.5,
                      instruction: str = DIRECT_INSTRUCTION) -> tuple[str, str, Scene]:
    """A benchmark question with a non-reasoning instruction (by default: answer directly, the short-answer VQA a
    pretrained VLM has seen): (prompt, gold answer, scene)."""
    category = rng.choice(TASKS)
    item = TASK_FNS[category](rng, rng.random() < letter_fraction, 6)
    return make_prompt(item, instruction=instruction), item.answer, item.scene


def reading_example(rng: random.Random) -> tuple[str, str, Scene]:
    """A text-only reading question about a scene's caption (the in-context retrieval a pretrained language model
    has and the traces rely on): find an object's cell, name what a cell holds, list the cells of one colour or
    shape and count them, or give a cell's row and column. Returns (prompt, target, scene)."""
    scene = random_scene(rng)
    kind = rng.choices(range(4), weights=(3, 2.5, 3.5, 1))[0]
    if kind == 0:
        o = rng.choice(scene.objects)
        same = [x for x in scene.objects if (x.colour, x.shape) == (o.colour, o.shape)]
        question, target = f"Where is the {o.describe()}?", f"{cell_list(same)}."
    elif kind == 1:
        cell = rng.randrange(9)
        o = scene.at(cell)
        question, target = f"What is at {cell_name(cell)}?", f"{o.describe() if o else 'empty'}."
    elif kind == 2:
        attr = rng.choice(("colour", "shape"))
        value = rng.choice(COLOURS if attr == "colour" else SHAPES)
        objs = [x for x in scene.objects if getattr(x, attr) == value]
        question, target = f"Which cells hold {noun_phrase(attr, value)}?", f"{cell_list(objs)}. That makes {len(objs)}."
    else:
        cell = rng.randrange(9)
        question, target = f"Which row and column is {cell_name(cell)}?", f"row {cell // GRID + 1} column {cell % GRID + 1}."
    return f"Grid: {scene.caption()} {question}", target, scene
