"""Segment ids and reasoning-tag names shared by rendering, the loss, evaluation and rewards."""

from __future__ import annotations

from dataclasses import dataclass, field

# Every token of a rendered example carries one of these ids (``segment_ids``).
SEGMENT_PROMPT = 0  # prompt, image tokens, padding: never supervised (labels = -100)
SEGMENT_THINK = 1  # from the start of the response through the closing think tag
SEGMENT_ANSWER = 2  # everything after the closing think tag, plus the end-of-turn token
SEGMENT_NAMES = {SEGMENT_PROMPT: "prompt", SEGMENT_THINK: "think", SEGMENT_ANSWER: "answer"}


@dataclass(frozen=True)
class Tags:
    """The four reasoning tags. Configurable because some corpora use e.g. ``<reasoning>`` or ``<final>``."""

    think_open: str = "<think>"
    think_close: str = "</think>"
    answer_open: str = "<answer>"
    answer_close: str = "</answer>"
    # Responses whose answer is not wrapped (Vision-R1 style ``<think>...</think> ... Final Answer: X``): the answer
    # is everything after the closing think tag. Off by default, so a missing answer tag stays an error.
    untagged_answer: bool = False

    def __post_init__(self):
        names = [self.think_open, self.think_close, self.answer_open, self.answer_close]
        if any(not n for n in names) or len(set(names)) != 4:
            raise ValueError(f"the four tags must be distinct and non-empty, got {names}")

    def wrap(self, think: str, answer: str) -> str:
        """``<think>think</think><answer>answer</answer>``."""
        return f"{self.think_open}{think}{self.think_close}{self.answer_open}{answer}{self.answer_close}"


DEFAULT_TAGS = Tags()


TAG_FIELDS = ("think_open", "think_close", "answer_open", "answer_close")
_TAG_HELP = {"think_open": "Opening think tag.", "think_close": "Closing think tag.",
             "answer_open": "Opening answer tag.", "answer_close": "Closing answer tag."}


def tag_field(name: str):
    """The config field of one tag (``think_open`` ...): default and help are the same in every command's config."""
    return field(default=getattr(DEFAULT_TAGS, name), metadata={"help": _TAG_HELP[name]})


@dataclass(kw_only=True)
class TagFields:
    """The tag options of every command's config (SFT, GRPO, eval, inspect-data), declared once; ``tags`` builds
    (and so validates) them. Keyword-only, so a config that inherits them may still declare required fields."""

    think_open: str = tag_field("think_open")
    think_close: str = tag_field("think_close")
    answer_open: str = tag_field("answer_open")
    answer_close: str = tag_field("answer_close")
    untagged_answer: bool = field(default=False, metadata={
        "help": "The answer is everything after the closing think tag (responses like '<think>...</think> Final "
                "Answer: X' with no answer tags). Off: a response without answer tags is an error."})

    @property
    def tags(self) -> Tags:
        return Tags(*(getattr(self, name) for name in TAG_FIELDS), untagged_answer=self.untagged_answer)
