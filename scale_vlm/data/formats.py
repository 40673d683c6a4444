"""Input formats, normalised to one ``ChatExample`` (images + prompt turns + response text).

Accepted rows:
- TRL conversational: ``messages`` (last turn from the assistant) + ``images`` (or ``image``); content as a string
  or as a list of parts, turn by turn;
- ShareGPT / LLaVA (the Vision-R1 cold-start format): ``conversations`` with ``from: human|gpt|system`` and an
  ``<image>`` placeholder in the text + ``image`` / ``images`` (paths or PIL images);
- prompt/completion: ``prompt`` and ``completion`` as strings or message lists + ``images`` / ``image``.
Images may be PIL images, paths (relative to ``image_root``), or ``{"bytes": ..., "path": ...}`` dicts.

The reasoning of the response comes in either of two shapes, which give the same example:
- tags inside the content: ``<think>reasoning</think><answer>X</answer>``;
- a separate ``reasoning_content`` (or ``reasoning``) field of the assistant message next to the final ``content``
  (``<answer>X</answer>``), the TRL / transformers convention. The response is then
  ``think_open + reasoning + think_close + content``; the renderer hands the reasoning back to templates that render
  the field themselves (see ``scale_vlm.data.render``).

A JSON file whose rows Arrow cannot hold in one table (a content that is a list of parts in one turn and a string
in another) arrives as one ``_raw_json`` column of JSON text per row; :func:`normalize_example` decodes it, so every
command that reads examples through it (sft, inspect-data, eval and grpo's ``sft`` adapter) reads the same rows.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..segments import DEFAULT_TAGS, Tags

# A decompression-bomb guard of our own: PIL's default raises only above ~179 Mpx and warns below.
MAX_IMAGE_PIXELS = 64_000_000
# Rows Arrow cannot hold in one table are kept as JSON text in this one column (see scale_vlm.data.prepare).
RAW_JSON_COLUMN = "_raw_json"
REASONING_FIELDS = ("reasoning_content", "reasoning")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class ExampleError(ValueError):
    """A bad example: names its index and the problem. ``reason`` is a short key used to count skips."""

    def __init__(self, index: int | None, problem: str, reason: str):
        self.index, self.problem, self.reason = index, problem, reason
        where = f"example {index}" if index is not None else "example"
        super().__init__(f"{where}: {problem}")


@dataclass
class ChatExample:
    images: list[Image.Image]
    prompt_messages: list[dict]  # system/user (and earlier assistant) turns, content as lists of parts
    response: str  # the final assistant turn, supervised
    meta: dict[str, Any] = field(default_factory=dict)


def decode_row(row: Any, index: int | None = None) -> dict:
    """``row`` as a plain dict: a ``_raw_json`` row (see :data:`RAW_JSON_COLUMN`) decoded, anything else copied."""
    if not isinstance(row, Mapping):
        raise ExampleError(index, f"expected a mapping, got {type(row).__name__}", "bad_row")
    if set(row) == {RAW_JSON_COLUMN}:
        try:
            row = json.loads(row[RAW_JSON_COLUMN])
        except (TypeError, json.JSONDecodeError) as err:
            raise ExampleError(index, f"the row is not valid JSON ({err})", "bad_row") from err
        if not isinstance(row, Mapping):
            raise ExampleError(index, f"expected a JSON object, got {type(row).__name__}", "bad_row")
    return dict(row)


def normalize_example(row: dict, index: int | None = None, image_root: str | None = None,
                      tags: Tags = DEFAULT_TAGS) -> ChatExample:
    """Detect the format of ``row`` and return its ``ChatExample`` (images loaded and converted to RGB).

    ``tags`` are the think tags a separate reasoning field is wrapped in (the response is always tagged text)."""
    row = decode_row(row, index)
    messages, response, reasoning = _conversation(row, index, tags)
    prompt_messages = messages[:-1]
    if not prompt_messages:
        raise ExampleError(index, "there is no prompt turn before the response", "no_prompt")
    raw_images = row.get("images")
    if raw_images is None and row.get("image") is not None:
        raw_images = row["image"]
    if raw_images is None:
        raw_images = []
    if not isinstance(raw_images, (list, tuple)):
        raw_images = [raw_images]
    images = [load_image(img, index, image_root) for img in raw_images]
    n_placeholders = sum(
        1 for m in prompt_messages for part in m["content"] if isinstance(part, dict) and part.get("type") == "image"
    )
    if n_placeholders != len(images):
        raise ExampleError(
            index, f"{n_placeholders} image placeholder(s) in the prompt but {len(images)} image(s)", "image_count"
        )
    return ChatExample(images=images, prompt_messages=prompt_messages, response=response,
                       meta={"reasoning_field": reasoning is not None})


def response_text(row: Any, index: int | None = None, tags: Tags = DEFAULT_TAGS) -> str:
    """The supervised response of ``row`` as tagged text, as :func:`normalize_example` reads it, without loading
    the images (for length checks over many rows)."""
    return _conversation(decode_row(row, index), index, tags)[1]


def _conversation(row: dict, index: int | None, tags: Tags) -> tuple[list[dict], str, str | None]:
    """``(messages, response, reasoning field)`` of a decoded row: its turns in one form whatever its format, the
    final assistant turn's text with a separate reasoning field wrapped in ``tags``."""
    if row.get("messages") is not None:
        messages = _as_messages(row["messages"], index)
    elif row.get("conversations") is not None:
        messages = _sharegpt_to_messages(row["conversations"], index)
    elif row.get("prompt") is not None and row.get("completion") is not None:
        messages = _prompt_completion_to_messages(row["prompt"], row["completion"], index)
    else:
        raise ExampleError(
            index,
            f"no supported columns: expected 'messages', 'conversations' or 'prompt'+'completion', got {sorted(row)}",
            "unknown_format",
        )
    if not messages or messages[-1]["role"] != "assistant":
        raise ExampleError(index, "the last turn must be the assistant's response", "no_response")
    response = _text_of(messages[-1]["content"])
    reasoning = messages[-1].get("reasoning_content")
    if reasoning is not None:
        if tags.think_open in response or tags.think_close in response:
            raise ExampleError(index, f"the response has both a reasoning field and {tags.think_open!r} tags in its "
                               "content; keep one of them", "duplicate_reasoning")
        response = f"{tags.think_open}{reasoning}{tags.think_close}{response}"
    if not response.strip():
        raise ExampleError(index, "the assistant response is empty", "empty_response")
    return messages, response, reasoning


def load_image(image: Any, index: int | None = None, image_root: str | None = None) -> Image.Image:
    """Load ``image`` (PIL, path, or datasets-style dict) as RGB, with a clear error when it can't be used."""
    try:
        if isinstance(image, Image.Image):
            img = image
        elif isinstance(image, dict) and image.get("bytes"):
            img = Image.open(io.BytesIO(image["bytes"]))
        elif isinstance(image, (str, os.PathLike)) or (isinstance(image, dict) and image.get("path")):
            path = image if not isinstance(image, dict) else image["path"]
            path = os.fspath(path)
            if image_root and not os.path.isabs(path):
                path = os.path.join(image_root, path)
            if not os.path.isfile(path):
                raise ExampleError(index, f"image file not found: {path}{_where_relative(image, image_root)}",
                                   "image_missing")
            img = Image.open(path)
        else:
            raise ExampleError(index, f"unsupported image value of type {type(image).__name__}", "image_type")
        width, height = img.size
        if width == 0 or height == 0:
            raise ExampleError(index, f"image has zero size {width}x{height}", "image_empty")
        if width * height > MAX_IMAGE_PIXELS:
            raise ExampleError(
                index, f"image of {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels", "image_huge"
            )
        img.load()  # decode now, so truncated files fail here and not inside a training step
        return _to_rgb(img)
    except ExampleError:
        raise
    except Image.DecompressionBombError as err:  # PIL refuses the header size before our own check can run
        raise ExampleError(index, f"image is too large to decode ({err})", "image_huge") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ExampleError(index, f"image could not be loaded ({type(err).__name__}: {err})", "image_unreadable") from err


def _where_relative(image: Any, image_root: str | None) -> str:
    """For a relative path, say what it was resolved against and how to change that."""
    given = os.fspath(image if not isinstance(image, dict) else image["path"])
    if os.path.isabs(given):
        return ""
    if image_root:
        return f" (relative path {given!r} resolved against image_root {image_root!r})"
    return (f" (relative path {given!r} resolved against the working directory {os.getcwd()!r}; set image_root "
            "(--image_root) to the folder the paths are relative to)")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        img = Image.fromarray((arr * (255.0 / top)).astype("uint8"), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _as_messages(messages: Any, index: int | None) -> list[dict]:
    if not isinstance(messages, (list, tuple)):
        raise ExampleError(index, "'messages' must be a list of turns", "bad_messages")
    out = []
    for turn in messages:
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ExampleError(index, f"each message needs 'role' and 'content', got {turn!r:.80}", "bad_messages")
        message = {"role": turn["role"], "content": _as_parts(turn["content"], index)}
        reasoning = _reasoning_of(turn, index)
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        out.append(message)
    return out


def _reasoning_of(turn: dict, index: int | None) -> str | None:
    """The reasoning field of an assistant turn (``reasoning_content``, else ``reasoning``), None when absent.

    datasets fills a missing key with None, and an empty string is no reasoning either."""
    if turn.get("role") != "assistant":
        return None
    for name in REASONING_FIELDS:
        value = turn.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ExampleError(index, f"the assistant's {name!r} must be a string, got {type(value).__name__}",
                               "bad_messages")
        return value
    return None


def _as_parts(content: Any, index: int | None) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return _split_image_placeholders(content)
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, dict) and part.get("type") == "image":
                parts.append({"type": "image"})
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append({"type": "text", "text": part.get("text") or ""})
            elif isinstance(part, dict) and part.get("type") is None and "text" in part and part["text"] is not None:
                # datasets stores list-of-dict columns with every key: {"type": None, "text": ...} style rows
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ExampleError(index, f"unsupported message part {part!r:.80}", "bad_messages")
        return parts
    raise ExampleError(index, f"unsupported message content of type {type(content).__name__}", "bad_messages")


def _split_image_placeholders(text: str, placeholder: str = "<image>") -> list[dict]:
    parts: list[dict] = []
    pieces = text.split(placeholder)
    for i, piece in enumerate(pieces):
        if i > 0:
            parts.append({"type": "image"})
        # The newline that usually follows "<image>" belongs to the placeholder, not to the question.
        if i > 0 and piece.startswith("\n"):
            piece = piece[1:]
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _sharegpt_to_messages(conversations: Any, index: int | None) -> list[dict]:
    if not isinstance(conversations, (list, tuple)):
        raise ExampleError(index, "'conversations' must be a list of turns", "bad_messages")
    out = []
    for turn in conversations:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ExampleError(index, f"each conversation turn needs 'from' and 'value', got {turn!r:.80}", "bad_messages")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise ExampleError(index, f"unknown speaker {turn['from']!r} (expected human/gpt/system)", "bad_messages")
        value = turn["value"] if isinstance(turn["value"], str) else ""
        content = _split_image_placeholders(value) if role != "assistant" else [{"type": "text", "text": value}]
        out.append({"role": role, "content": content})
    return out


def _prompt_completion_to_messages(prompt: Any, completion: Any, index: int | None) -> list[dict]:
    prompt_msgs = _as_messages(prompt, index) if isinstance(prompt, (list, tuple)) else [
        {"role": "user", "content": _as_parts(prompt, index)}
    ]
    if isinstance(completion, (list, tuple)):
        completion_msgs = _as_messages(completion, index)
    else:
        completion_msgs = [{"role": "assistant", "content": [{"type": "text", "text": str(completion)}]}]
    return prompt_msgs + completion_msgs


def _text_of(parts: list[dict]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")
