"""Grid scenes of coloured shapes and their PIL rendering, deterministic for a given random generator.

A scene is a 3x3 grid of 16-px cells (a 48x48 image). Each occupied cell holds one solid shape centred in the
cell, so every cell is exactly one image token of the tiny Qwen2-VL (8-px patches merged 2x2).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
GRID = 3
CELL_PX = 16
IMAGE_PX = GRID * CELL_PX

RGB = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
BACKGROUND = (255, 255, 255)


def cell_name(cell: int) -> str:
    """``top left`` ... ``bottom right`` (cells numbered row by row from 0)."""
    return f"{ROWS[cell // GRID]} {COLS[cell % GRID]}"


@dataclass(frozen=True)
class Obj:
    cell: int  # 0..8, row-major
    colour: str
    shape: str

    @property
    def row(self) -> int:
        return self.cell // GRID

    @property
    def col(self) -> int:
        return self.cell % GRID

    def describe(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # sorted by cell

    @staticmethod
    def of(objects) -> Scene:
        objs = tuple(sorted(objects, key=lambda o: o.cell))
        if len({o.cell for o in objs}) != len(objs):
            raise ValueError("two objects in one cell")
        return Scene(objs)

    def at(self, cell: int) -> Obj | None:
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def caption(self, order: str = "cell_first") -> str:
        """The occupied cells in reading order: ``top left red circle, middle centre blue square.``; with
        ``order="object_first"``: ``red circle at top left, blue square at middle centre.``"""
        if not self.objects:
            return "the grid is empty."
        if order == "object_first":
            return ", ".join(f"{o.describe()} at {cell_name(o.cell)}" for o in self.objects) + "."
        return ", ".join(f"{cell_name(o.cell)} {o.describe()}" for o in self.objects) + "."

    def to_dict(self) -> list[dict]:
        return [{"cell": o.cell, "colour": o.colour, "shape": o.shape} for o in self.objects]


def free_cells(taken, rng: random.Random, k: int) -> list[int]:
    cells = [c for c in range(GRID * GRID) if c not in set(taken)]
    if k > len(cells):
        raise ValueError(f"need {k} free cells, only {len(cells)} left")
    return rng.sample(cells, k)


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = 6) -> Scene:
    """Uniform number of objects, random cells, colours and shapes (used for captioning / perception)."""
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample(range(GRID * GRID), n)
    return Scene.of(Obj(c, rng.choice(COLOURS), rng.choice(SHAPES)) for c in cells)


def render(scene: Scene, rng: random.Random | None = None, jitter: int = 0, size_jitter: int = 0, size: int = 12) -> Image.Image:
    """48x48 RGB image. ``jitter`` shifts each shape up to that many pixels, ``size_jitter`` varies its size;
    both need ``rng`` (the default 0/0 renders patch-aligned, identical shapes)."""
    img = Image.new("RGB", (IMAGE_PX, IMAGE_PX), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        s = size + (rng.randint(-size_jitter, size_jitter) if size_jitter and rng else 0)
        dx = rng.randint(-jitter, jitter) if jitter and rng else 0
        dy = rng.randint(-jitter, jitter) if jitter and rng else 0
        cx = o.col * CELL_PX + CELL_PX / 2 + dx
        cy = o.row * CELL_PX + CELL_PX / 2 + dy
        h = s / 2
        box = [cx - h, cy - h, cx + h - 1, cy + h - 1]
        fill = RGB[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle([cx - h + 1, cy - h + 1, cx + h - 2, cy + h - 2], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - h), (cx - h, cy + h - 1), (cx + h - 1, cy + h - 1)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return img


# ------------------------------------------------------------------------------------- reading captions back

_ROW, _COL, _COLOUR, _SHAPE = ("(%s)" % "|".join(v) for v in (ROWS, COLS, COLOURS, SHAPES))
_CELL_RE = re.compile(rf"{_ROW} {_COL} {_COLOUR} {_SHAPE}")
_OBJECT_FIRST_RE = re.compile(rf"{_COLOUR} {_SHAPE} at {_ROW} {_COL}")


def parse_caption(text: str) -> dict[int, tuple[str, str]]:
    """``{cell: (colour, shape)}`` from a caption in either scan order (``top left red circle`` or
    ``red circle at top left``); the first mention of a cell wins."""
    found = [(m.start(), m.group(1), m.group(2), m.group(3), m.group(4)) for m in _CELL_RE.finditer(text)]
    found += [(m.start(), m.group(3), m.group(4), m.group(1), m.group(2)) for m in _OBJECT_FIRST_RE.finditer(text)]
    out = {}
    for _, row, col, colour, shape in sorted(found):
        out.setdefault(ROWS.index(row) * GRID + COLS.index(col), (colour, shape))
    return out
