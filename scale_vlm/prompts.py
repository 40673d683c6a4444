"""Prompt pieces shared by the built-in benchmark, the evaluation adapters and GRPO."""

from __future__ import annotations

from collections.abc import Sequence

from .segments import DEFAULT_TAGS, Tags

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def reasoning_instruction(tags: Tags = DEFAULT_TAGS) -> str:
    """The instruction appended to every question: reason in the think tags, answer in the answer tags."""
    return (
        f"Think step by step inside {tags.think_open}{tags.think_close}, "
        f"then give only the final answer inside {tags.answer_open}{tags.answer_close}."
    )


def format_options(choices: Sequence[str]) -> str:
    """``(A) first (B) second ...`` on one line, the convention of ScienceQA/IconQA prompts."""
    if len(choices) > len(OPTION_LETTERS):
        raise ValueError(f"at most {len(OPTION_LETTERS)} options are supported, got {len(choices)}")
    return " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))
