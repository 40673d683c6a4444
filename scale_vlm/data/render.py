"""Render one example into model inputs with a segment id per token.

Segments are decided here, once, from character offsets of the real processor's tokenization, so they are exact
with byte-level BPE vocabularies where the tags are ordinary text that merges with neighbouring characters.

Rules (documented in docs/segments.md and tested):
- the response is stripped of surrounding whitespace, then split at the end of the closing think tag:
  THINK = response characters up to and including ``</think>``;
  ANSWER = every character after it (whitespace between the segments, ``<answer>``, the answer text, ``</answer>``);
- a token belongs to the response if it covers at least one response character; a response token that covers
  any ANSWER character is ANSWER (so a token straddling the boundary, like Qwen's ``'><'`` in
  ``</think><answer>``, goes to the answer, and every answer character is in the answer segment);
- the end-of-turn / EOS token that the chat template puts right after the response is ANSWER and stays
  supervised; if the template adds none, the tokenizer's EOS token is appended;
- everything else (system/user turns, image tokens, the generation prompt, template text after the EOS) is PROMPT
  with label -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..segments import DEFAULT_TAGS, SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK, Tags
from .formats import ChatExample, ExampleError


@dataclass
class RenderedExample:
    """Token-level view of one example. Lists of equal length L (images kept for the collator)."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]  # -100 outside the response
    segment_ids: list[int]  # SEGMENT_PROMPT / SEGMENT_THINK / SEGMENT_ANSWER
    extra: dict  # other per-token processor outputs, e.g. mm_token_type_ids (Qwen2-VL)
    text: str  # the rendered chat text (before image-token expansion)

    def as_row(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "labels": self.labels,
            "segment_ids": self.segment_ids,
            **self.extra,
        }


def split_response(response: str, tags: Tags = DEFAULT_TAGS, index: int | None = None) -> int:
    """Validate the tag structure of ``response`` and return the index just past the closing think tag.

    Requires exactly one think block followed by exactly one answer block, nothing but whitespace around them,
    and non-empty think and answer text. Tag matching is exact (case-sensitive), as in the training data.
    """
    counts = {tag: response.count(tag) for tag in (tags.think_open, tags.think_close, tags.answer_open, tags.answer_close)}
    for tag, n in counts.items():
        if n == 0:
            raise ExampleError(index, f"missing tag {tag!r} in the response", "missing_tag")
        if n > 1:
            raise ExampleError(index, f"tag {tag!r} appears {n} times in the response", "duplicate_tag")
    to, tc = response.index(tags.think_open), response.index(tags.think_close)
    ao, ac = response.index(tags.answer_open), response.index(tags.answer_close)
    if not to < tc:
        raise ExampleError(index, f"{tags.think_close!r} comes before {tags.think_open!r}", "misordered_tags")
    if not ao < ac:
        raise ExampleError(index, f"{tags.answer_close!r} comes before {tags.answer_open!r}", "misordered_tags")
    if ao < tc and ac > to:
        raise ExampleError(index, "the think and answer blocks overlap or are nested", "nested_tags")
    if ao < to:
        raise ExampleError(index, "the answer block comes before the think block", "misordered_tags")
    if response[:to].strip():
        raise ExampleError(index, f"text before {tags.think_open!r}: {response[:to].strip()[:40]!r}", "text_outside_tags")
    between = response[tc + len(tags.think_close) : ao]
    if between.strip():
        raise ExampleError(index, f"text between the think and answer blocks: {between.strip()[:40]!r}", "text_outside_tags")
    if response[ac + len(tags.answer_close) :].strip():
        raise ExampleError(index, f"text after {tags.answer_close!r}", "text_outside_tags")
    if not response[to + len(tags.think_open) : tc].strip():
        raise ExampleError(index, "empty think segment", "empty_think")
    if not response[ao + len(tags.answer_open) : ac].strip():
        raise ExampleError(index, "empty answer segment", "empty_answer")
    return tc + len(tags.think_close)


def render_example(
    example: ChatExample,
    processor,
    tags: Tags = DEFAULT_TAGS,
    max_length: int | None = None,
    index: int | None = None,
) -> RenderedExample:
    """Render ``example`` through ``processor``'s chat template and tokenizer; see the module docstring for rules."""
    tokenizer = getattr(processor, "tokenizer", processor)
    response = example.response.strip()
    think_end = split_response(response, tags, index)

    assistant = {"role": "assistant", "content": [{"type": "text", "text": response}]}
    full_text = processor.apply_chat_template(example.prompt_messages + [assistant], tokenize=False)
    prefix = processor.apply_chat_template(example.prompt_messages, tokenize=False, add_generation_prompt=True)
    if not (full_text.startswith(prefix) and full_text[len(prefix) :].startswith(response)):
        raise ExampleError(
            index,
            "the chat template does not put the response verbatim right after the generation prompt; "
            "segments cannot be located (use a template that inserts assistant content unchanged)",
            "template_mismatch",
        )
    resp_start, resp_end = len(prefix), len(prefix) + len(response)
    answer_start = resp_start + think_end

    call = dict(text=[full_text], return_offsets_mapping=True, add_special_tokens=False)
    if example.images:
        call["images"] = example.images
        call["return_text_replacement_offsets"] = True
    try:
        enc = processor(**call) if tokenizer is not processor else tokenizer(**call)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        raise ExampleError(index, f"the processor failed on this example ({type(err).__name__}: {err})", "processor_error") from err
    input_ids = _first(enc["input_ids"])
    offsets = [tuple(o) for o in _first(enc["offset_mapping"])]
    extra = {k: _first(v) for k, v in enc.items() if k == "mm_token_type_ids" or k == "token_type_ids"}
    # Image placeholders are expanded before tokenization, all of them inside the prompt: response characters
    # sit at the same distance from the end of the text, so one shift maps them into the expanded text.
    shift = _expansion_shift(enc.get("text_replacement_offsets"), full_text, offsets)

    segment_ids = []
    eos_found = False
    special_ids = set(tokenizer.all_special_ids)
    for tok, (s, e) in zip(input_ids, offsets):
        s, e = s - shift, e - shift
        if e > resp_start and s < resp_end and e > s:
            segment_ids.append(SEGMENT_ANSWER if e > answer_start else SEGMENT_THINK)
        elif s >= resp_end and not eos_found and tok in special_ids:
            segment_ids.append(SEGMENT_ANSWER)  # end-of-turn / EOS right after the response: must be learned
            eos_found = True
        else:
            segment_ids.append(SEGMENT_PROMPT)
    if not eos_found:
        if tokenizer.eos_token_id is None:
            raise ExampleError(index, "the template ends the response with no special token and the tokenizer has no EOS", "no_eos")
        last = max(i for i, seg in enumerate(segment_ids) if seg != SEGMENT_PROMPT) + 1
        input_ids = input_ids[:last] + [tokenizer.eos_token_id] + input_ids[last:]
        segment_ids = segment_ids[:last] + [SEGMENT_ANSWER] + segment_ids[last:]
        extra = {k: v[:last] + [0] + v[last:] for k, v in extra.items()}

    if SEGMENT_THINK not in segment_ids or not any(
        seg == SEGMENT_ANSWER and s - shift < resp_end for seg, (s, _) in zip(segment_ids, offsets)
    ):
        raise ExampleError(index, "tokenization left the think or answer segment without tokens", "empty_segment")

    if max_length is not None and len(input_ids) > max_length:
        last_supervised = max(i for i, seg in enumerate(segment_ids) if seg != SEGMENT_PROMPT)
        if last_supervised >= max_length:
            first_answer = segment_ids.index(SEGMENT_ANSWER)
            raise ExampleError(
                index,
                f"{len(input_ids)} tokens exceed max_length={max_length}: truncation would cut into the "
                f"{'answer' if first_answer < max_length else 'response'} (answer starts at token {first_answer}); "
                "raise max_length or shorten the example",
                "truncated_answer",
            )
        # Only unsupervised template text after the EOS is cut.
        input_ids, segment_ids = input_ids[:max_length], segment_ids[:max_length]
        extra = {k: v[:max_length] for k, v in extra.items()}

    labels = [tok if seg != SEGMENT_PROMPT else -100 for tok, seg in zip(input_ids, segment_ids)]
    return RenderedExample(
        input_ids=list(input_ids),
        attention_mask=[1] * len(input_ids),
        labels=labels,
        segment_ids=segment_ids,
        extra=extra,
        text=full_text,
    )


def _first(value):
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return list(value[0]) if value and isinstance(value[0], (list, tuple)) else list(value)


def _expansion_shift(replacements, text: str, offsets: list[tuple[int, int]]) -> int:
    """Characters added before the response by image-placeholder expansion."""
    if replacements:
        spans = replacements[0] if replacements and isinstance(replacements[0], list) else replacements
        return sum((r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0]) for r in spans)
    if replacements is not None:  # the processor reported no replacement
        return 0
    # Processors that cannot report replacements: the last offset ends at the end of the expanded text.
    ends = [e for s, e in offsets if e > s]
    return max(ends) - len(text) if ends else 0
