"""The one parser of model outputs shaped ``<think>reasoning</think><answer>short answer</answer>``.

Evaluation and the GRPO rewards both read outputs through :func:`parse_output` / :func:`is_well_formed`, so the
rules live here only. The module is pure (no torch, no I/O) and compiles its patterns once per :class:`Tags`.

Rules (also tabled in ``docs/evaluation.md``):

* Tags match case-insensitively and tolerate whitespace inside the brackets: ``<ANSWER>``, ``< answer >`` and
  ``</ answer>`` all count. Think and answer texts are returned with surrounding whitespace stripped.
* The think block is the first ``<think>`` up to the first ``</think>``. A ``</think>`` without ``<think>`` takes
  everything before it as the think text; a ``<think>`` that is never closed runs to the first ``<answer>`` (or the
  end). Both make the output malformed.
* Answer blocks are searched outside the think block. Answer tags inside the think block are reasoning text, are
  ignored, and make the output malformed (nested tags).
* Several complete answer blocks: the LAST one is the answer (a model that corrects itself means its final
  word), and the output is malformed because a well-formed output has exactly one.
* An answer block before the think block (misordered tags): the answer is still read, the output is malformed.
* ``<answer>`` never closed (typically a truncated generation): the partial text after it is returned as the
  answer so it can still be scored, ``answer_source`` is ``"truncated"`` and the output is malformed.
* No answer tag at all: the reply is scored bare. The text after ``</think>`` (or the whole reply when there are
  no think tags) is the answer, ``answer_source`` is ``"bare"``, and the output is malformed. An unclosed think
  with no answer tag gives no answer (it was all reasoning).
* An empty answer block gives ``answer == ""`` and is malformed.
* A missing think block alone does NOT make the output malformed: "malformed" means the answer cannot be read
  reliably (no parsable ``<answer>``, misordered, nested or unclosed tags). Whether the think-then-answer format
  was followed exactly is :func:`is_well_formed`, the GRPO format reward.
* Text before ``<think>`` or after ``</answer>`` is ignored by :func:`parse_output` but fails
  :func:`is_well_formed`.
* ``Tags(untagged_answer=True)`` (responses like ``<think>...</think> Final Answer: X``): an output with a complete
  think block and no answer tag at all has the text after ``</think>`` as its answer (``answer_source``
  ``"untagged"``), is not malformed, and is well formed when that text is non-empty and nothing precedes the think
  block. Outputs with answer tags are read as above.

Family formats: a model whose template writes reasoning with its own delimiters (Gemma-4's
``<|channel>thought ... <channel|>``) or whose generation prompt already opened the think block (Qwen3.5, Qwen3-VL
Thinking: the output starts inside it) is read through :func:`as_tagged`, which rewrites the output in the configured
tags first, so the rules above (accuracy, malformed rate, format reward) mean the same for every family.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .segments import DEFAULT_TAGS, Tags

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "think_open", "think_close", "answer_open", "answer_close"

# Where the returned answer came from.
SOURCE_TAG = "tag"  # a complete <answer>...</answer> block
SOURCE_TRUNCATED = "truncated"  # an <answer> that was never closed
SOURCE_BARE = "bare"  # no answer tag: the reply itself
SOURCE_NONE = "none"  # nothing to score
SOURCE_UNTAGGED = "untagged"  # Tags(untagged_answer=True): the text after the think block


@dataclass(frozen=True)
class ReasoningFormat:
    """How a model family writes its reasoning (probed from its chat template by
    :func:`scale_vlm.data.render.reasoning_format`)."""

    think_open: str
    """Opening delimiter as the template writes it (``<think>``, ``<|channel>thought``), whitespace stripped."""
    think_close: str
    """Closing delimiter (``</think>``, ``<channel|>``)."""
    from_field: bool = False
    """The template renders the ``reasoning_content`` field with these (non-configured) delimiters."""
    template_kwargs: tuple = ()
    """Chat-template variables to render with (``(("enable_thinking", True),)``)."""
    opened_by_prompt: bool = False
    """The generation prompt already wrote ``think_open``: generated text starts inside the think block."""
    assistant_text: bool = False
    """The template prints assistant content as it is (GLM-4.1V): assistant turns are passed as a string, since a
    list of parts would be written as its Python repr."""


def as_tagged(text: str, fmt: ReasoningFormat | None, tags: Tags = DEFAULT_TAGS) -> str:
    """A generated ``text`` in the configured tags: the opening delimiter the generation prompt wrote put back in
    front, the family's own delimiters replaced by ``tags``' think tags. ``fmt=None`` leaves ``text`` as it is."""
    if fmt is None:
        return text
    if fmt.opened_by_prompt and not text.lstrip().startswith(fmt.think_open):
        text = fmt.think_open + text
    if fmt.from_field:
        text = text.replace(fmt.think_open, tags.think_open).replace(fmt.think_close, tags.think_close)
    return text


@dataclass(frozen=True)
class ParsedOutput:
    think: str | None
    """Text of the think block, stripped; None when there is no think tag at all."""
    answer: str | None
    """The text to score, stripped; None when there is nothing to score."""
    malformed: bool
    """True when the answer cannot be read reliably: no answer block, misordered, nested or unclosed tags."""
    reason: str
    """Why the output is malformed ("; "-joined), "" when it is not."""
    has_think: bool
    """A complete think block (opening and closing tag, in that order) is present."""
    answer_source: str
    """``"tag"``, ``"truncated"``, ``"bare"`` or ``"none"``: where :attr:`answer` was read from."""
    num_answer_blocks: int
    """Complete answer blocks outside the think block."""


@dataclass(frozen=True)
class _TagMatch:
    kind: str
    start: int
    end: int


def _tag_pattern(tag: str) -> str:
    # "<answer>" -> "<\s*answer\s*>", "</answer>" -> "<\s*/\s*answer\s*>"; other tag shapes match literally.
    match = re.fullmatch(r"<(/?)\s*(.+?)\s*>", tag)
    if match is None:
        return re.escape(tag)
    slash = r"/\s*" if match.group(1) else ""
    return rf"<\s*{slash}{re.escape(match.group(2))}\s*>"


@functools.lru_cache(maxsize=32)
def _compile(tags: Tags) -> re.Pattern:
    kinds = {THINK_OPEN: tags.think_open, THINK_CLOSE: tags.think_close,
             ANSWER_OPEN: tags.answer_open, ANSWER_CLOSE: tags.answer_close}
    return re.compile("|".join(f"(?P<{kind}>{_tag_pattern(tag)})" for kind, tag in kinds.items()), re.IGNORECASE)


def _find_tags(text: str, tags: Tags) -> list[_TagMatch]:
    return [_TagMatch(m.lastgroup, m.start(), m.end()) for m in _compile(tags).finditer(text)]


def strip_tags(text: str, tags: Tags = DEFAULT_TAGS) -> str:
    """``text`` with every reasoning tag removed."""
    return _compile(tags).sub(" ", text)


def parse_output(text: str, tags: Tags = DEFAULT_TAGS) -> ParsedOutput:
    """Read the think and answer parts of a model output; see the module docstring for the rules."""
    if not isinstance(text, str):
        raise TypeError(f"parse_output expects a str, got {type(text).__name__}")
    found = _find_tags(text, tags)
    problems: list[str] = []

    # 1. The think block: [think_start, think_end) in text, content [content_start, content_end).
    first_open = next((t for t in found if t.kind == THINK_OPEN), None)
    first_close = next((t for t in found if t.kind == THINK_CLOSE), None)
    think = None
    has_think = False
    span: tuple[int, int] | None = None
    if first_close is not None and (first_open is None or first_open.start > first_close.start):
        problems.append(f"{tags.think_close} without {tags.think_open}")
        think, span = text[: first_close.start], (0, first_close.end)
    elif first_open is not None and first_close is not None:
        has_think = True
        think, span = text[first_open.end : first_close.start], (first_open.start, first_close.end)
    elif first_open is not None:
        problems.append(f"unclosed {tags.think_open}")
        stop = next((t.start for t in found if t.kind == ANSWER_OPEN and t.start > first_open.start), len(text))
        think, span = text[first_open.end : stop], (first_open.start, stop)

    if span is not None:
        inside = [t for t in found if span[0] <= t.start < span[1] and t not in (first_open, first_close)]
        if any(t.kind in (ANSWER_OPEN, ANSWER_CLOSE) for t in inside):
            problems.append("answer tag inside the think block")
        before, after = (0, span[0]), (span[1], len(text))
        extra_think = [t for t in found if t.kind in (THINK_OPEN, THINK_CLOSE) and not span[0] <= t.start < span[1]]
        if extra_think:
            problems.append("more than one think block")
    else:
        before, after = (0, 0), (0, len(text))

    # 2. Answer blocks outside the think block: before it (misordered) and after it.
    if any(t.kind in (ANSWER_OPEN, ANSWER_CLOSE) and before[0] <= t.start < before[1] for t in found):
        problems.append("answer before think")
    blocks_before, _ = _answer_blocks(text, found, before, tags, problems)
    blocks_after, partial = _answer_blocks(text, found, after, tags, problems)
    blocks = blocks_before + blocks_after

    # 3. Choose the answer.
    if blocks:
        answer, source = blocks[-1], SOURCE_TAG
        if len(blocks) > 1:
            problems.append(f"{len(blocks)} answer blocks, the last one is used")
        # Tags left inside the chosen block (e.g. "<answer>B<think>") are not part of the answer.
        if _compile(tags).search(answer):
            problems.append("tag inside the answer block")
            answer = strip_tags(answer, tags)
    elif partial is not None:
        answer, source = strip_tags(partial, tags), SOURCE_TRUNCATED
    elif tags.untagged_answer and has_think and not any(t.kind in (ANSWER_OPEN, ANSWER_CLOSE) for t in found):
        answer, source = strip_tags(text[after[0] : after[1]], tags), SOURCE_UNTAGGED
    else:
        problems.append(f"no {tags.answer_open} block")
        if first_open is not None and first_close is None:
            answer, source = None, SOURCE_NONE  # an unclosed think with no answer: all of it was reasoning
        else:
            answer, source = strip_tags(text[after[0] : after[1]], tags), SOURCE_BARE
    if answer is not None:
        answer = answer.strip()
        if not answer:
            if source == SOURCE_UNTAGGED:
                problems.append(f"nothing after {tags.think_close}")
                answer, source = None, SOURCE_NONE
            elif source == SOURCE_TAG:
                problems.append(f"empty {tags.answer_open} block")
            else:
                answer, source = None, SOURCE_NONE
    return ParsedOutput(
        think=None if think is None else think.strip(),
        answer=answer,
        malformed=bool(problems),
        reason="; ".join(dict.fromkeys(problems)),
        has_think=has_think,
        answer_source=source,
        num_answer_blocks=len(blocks),
    )


def _answer_blocks(
    text: str, found: list[_TagMatch], region: tuple[int, int], tags: Tags, problems: list[str]
) -> tuple[list[str], str | None]:
    """Complete answer blocks inside ``region`` and the text after an unclosed ``<answer>`` (or None)."""
    blocks: list[str] = []
    open_at: _TagMatch | None = None
    for t in found:
        if not region[0] <= t.start < region[1]:
            continue
        if t.kind == ANSWER_OPEN:
            if open_at is not None:
                problems.append(f"nested {tags.answer_open}")
            open_at = t  # the innermost opening tag starts the block
        elif t.kind == ANSWER_CLOSE:
            if open_at is None:
                problems.append(f"{tags.answer_close} without {tags.answer_open}")
            else:
                blocks.append(text[open_at.end : t.start])
                open_at = None
    if open_at is None:
        return blocks, None
    problems.append(f"unclosed {tags.answer_open}")
    return blocks, text[open_at.end : region[1]]


def is_well_formed(text: str, tags: Tags = DEFAULT_TAGS) -> bool:
    """Exactly one think block, then exactly one non-empty answer block, both closed, in that order, and nothing
    but whitespace before the think block, between the blocks and after the answer block (the GRPO format check)."""
    found = _find_tags(text, tags)
    if tags.untagged_answer and [t.kind for t in found] == [THINK_OPEN, THINK_CLOSE]:
        return not text[: found[0].start].strip() and bool(text[found[1].end :].strip())
    if [t.kind for t in found] != [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]:
        return False
    think_open, think_close, answer_open, answer_close = found
    outside = text[: think_open.start] + text[think_close.end : answer_open.start] + text[answer_close.end :]
    return not outside.strip() and bool(text[answer_open.end : answer_close.start].strip())
