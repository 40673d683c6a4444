"""Segment-aware data handling: input formats, rendering with segments, preparation policies, the collator."""

from .collator import ScaleCollator
from .formats import ChatExample, ExampleError, normalize_example
from .prepare import PreparationReport, prepare_dataset
from .render import RenderedExample, render_example, split_response

__all__ = [
    "ChatExample",
    "ExampleError",
    "PreparationReport",
    "RenderedExample",
    "ScaleCollator",
    "normalize_example",
    "prepare_dataset",
    "render_example",
    "split_response",
]
