"""Tag-aware evaluation: dataset adapters, batched greedy generation, scoring of the ``<answer>`` and metrics."""

from .adapters import (
    ColumnMapping,
    EvalExample,
    builtin_examples,
    column_examples,
    iconqa_examples,
    load_eval_dataset,
    scienceqa_examples,
)
from .evaluate import EvalConfig, evaluate_model, run_eval, score_outputs, summarize
from .generate import Completion, generate_batch, generate_completions

__all__ = [
    "ColumnMapping",
    "Completion",
    "EvalConfig",
    "EvalExample",
    "builtin_examples",
    "column_examples",
    "evaluate_model",
    "generate_batch",
    "generate_completions",
    "iconqa_examples",
    "load_eval_dataset",
    "run_eval",
    "scienceqa_examples",
    "score_outputs",
    "summarize",
]
