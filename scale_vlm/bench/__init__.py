"""The built-in procedural visual-reasoning benchmark (grid scenes, four task families, teacher-style traces)."""

from .dataset import (
    BenchConfig,
    build_benchmark,
    iter_items,
    make_benchmark,
    to_training_format,
    write_messages_jsonl,
    write_sharegpt_json,
)
from .scenes import COLOURS, SHAPES, Obj, Scene, random_scene, render
from .tasks import TASKS

__all__ = [
    "BenchConfig", "COLOURS", "build_benchmark", "Obj", "SHAPES", "Scene", "TASKS", "iter_items", "make_benchmark",
    "random_scene", "render", "to_training_format", "write_messages_jsonl", "write_sharegpt_json",
]
