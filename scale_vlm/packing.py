"""Padding-free (packed) batches for VLM SFT: several examples per row, none attending to another.

TRL refuses ``padding_free`` for vision datasets; ``ScaleSFTTrainer`` implements it for the model classes listed in
``PACKING_MODEL_CLASSES``. How a packed micro-batch is built and run:

* Rows: the micro-batch's examples go into rows by first-fit-decreasing (``first_fit_decreasing``). The row
  capacity is the longest example of the micro-batch unless ``packing_row_tokens`` sets it. Packing everything into
  one row would be the least padding, but on CPU (sdpa/eager) attention takes a dense ``[T, T]`` mask per row, so a
  row of all ``B`` examples costs ``O((B * L)^2)`` where padded batches cost ``O(B * L^2)``; a row no longer than the
  longest example keeps that bound and still removes most of the padding of long-tailed lengths. With varlen flash
  attention on a GPU the cost is per example whatever the row, and a large ``packing_row_tokens`` (one row) is best.
* Positions restart at 0 with every example (``position_ids`` [R, L]); there is no ``attention_mask``. transformers'
  ``masking_utils`` then finds the examples of a row from the positions (``find_packed_sequence_indices``: a new
  sequence wherever the position does not grow by 1) and masks attention across them
  (``packed_sequence_mask_function``) for sdpa / eager / flex; flash attention builds its varlen boundaries from the
  same positions. The padding at the end of a row is a sequence of its own (positions from 0 again), seen by no
  real token (it comes after them, and attention is causal).
* Qwen2/2.5/3-VL rotate with 3-D multimodal positions: ``mrope_position_ids`` computes them per example with the
  model's own ``get_rope_index`` and stacks the text positions on top, the ``[4, R, L]`` form those models take for
  packed input (the first row drives the mask).
* ``example_ids`` [R, L] gives each token the index of its example in the micro-batch (-1 on padding); the loss
  functions (``scale_vlm.loss``, ``scale_vlm.fused_loss``) take it to compute per-example segment means and the
  count of examples, so every normaliser is what the padded batch gives.
* The label shift never crosses examples: the last token of an example predicts the first token of the next one,
  which is a prompt token (label -100, segment 0); the collator checks this for every example it packs.
"""

from __future__ import annotations

import torch

from .segments import SEGMENT_PROMPT

# Model classes whose packed forward is verified equal to the padded one (tests/test_packing.py, on the
# conformance suite's tiny models of these exact classes): their language model builds its mask with
# masking_utils from the packed positions and their image features go to the image tokens in order.
PACKING_MODEL_CLASSES = (
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
)
# Classes known not to be exact, and why (checked against transformers 5.24 and 5.25).
PACKING_REFUSED = {
    "Gemma3ForConditionalGeneration": (
        "its sliding-window layers combine the bidirectional image-token mask (from token_type_ids) with the packed "
        "mask so that the image blocks are looked up at per-example positions instead of row positions "
        "(transformers' gemma3 create_masks_for_vision_model under masking_utils' packed-sequence remapping), so "
        "the tokens of every example after the first in a row would attend wrongly"),
}
# Attention implementations that separate packed examples by their positions (masking_utils or varlen flash).
PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens (an example longer than ``capacity``
    gets a row of its own). Longest first, each into the first row with room; within a row, examples keep their
    order in the micro-batch."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max(capacity, lengths[i]) - lengths[i])
    return [sorted(row) for row in rows]


def pack_rows(rows: list[dict], keys: list[str], pads: dict[str, int], capacity: int | None = None,
              pad_to_multiple_of: int | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Pack rendered examples into rows.

    rows: rendered examples (lists per token under ``keys``); pads: pad value per key.
    Returns (batch, order): ``batch[key]`` [R, L] for every key plus ``position_ids`` [R, L] (restarting at 0 per
    example and for the padding) and ``example_ids`` [R, L] (index in ``order``, -1 on padding); ``order[k]`` is
    the micro-batch index of packed example ``k`` (images must follow this order).
    """
    lengths = [len(r["input_ids"]) for r in rows]
    groups = first_fit_decreasing(lengths, capacity or max(lengths))
    length = max(sum(lengths[i] for i in g) for g in groups)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    order = [i for g in groups for i in g]
    out = {key: torch.full((len(groups), length), pads[key], dtype=torch.long) for key in keys}
    out["position_ids"] = torch.zeros(len(groups), length, dtype=torch.long)
    out["example_ids"] = torch.full((len(groups), length), -1, dtype=torch.long)
    k = 0
    for r, group in enumerate(groups):
        start = 0
        for i in group:
            row, n = rows[i], lengths[i]
            if "labels" in row and (row["labels"][0] != -100 or row["segment_ids"][0] != SEGMENT_PROMPT):
                # Its first label would be "predicted" by the previous example's last token.
                raise ValueError(f"example {i} starts with a supervised token; packing needs every example to start "
                                 "with a prompt token (label -100), or the previous example would be trained on it")
            for key in keys:
                out[key][r, start:start + n] = torch.as_tensor(list(row[key]), dtype=torch.long)
            out["position_ids"][r, start:start + n] = torch.arange(n)
            out["example_ids"][r, start:start + n] = k
            start += n
            k += 1
        out["position_ids"][r, start:] = torch.arange(length - start)
    return out, order


def example_spans(example_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """``[(start, end), ...]`` of each example, per row of ``example_ids`` [R, L] (padding, -1, left out)."""
    spans = []
    for row in example_ids.tolist():
        row_spans, start = [], None
        for t, e in enumerate(row + [-2]):
            if start is not None and e != row[start]:
                row_spans.append((start, t))
                start = None
            if start is None and e >= 0:
                start = t
        spans.append(row_spans)
    return spans


def rope_index_module(model):
    """The module with Qwen-VL's ``get_rope_index`` (multimodal rope positions), through PEFT/DDP wrappers;
    ``None`` for models with 1-D positions."""
    seen = set()
    stack = [model]
    while stack:
        m = stack.pop()
        if id(m) in seen or m is None:
            continue
        seen.add(id(m))
        if callable(getattr(m, "get_rope_index", None)) and hasattr(m, "language_model"):
            return m
        for name in ("module", "base_model", "model"):
            stack.append(getattr(m, name, None) if isinstance(getattr(m, name, None), torch.nn.Module) else None)
    return None


def _runs(types: list[int], kind: int) -> int:
    """Number of contiguous runs of ``kind`` in ``types`` (one run per image in Qwen-VL's token layout)."""
    return sum(1 for t, prev in zip(types, [None] + types[:-1]) if t == kind and prev != kind)


def mrope_position_ids(rope_module, inputs: dict, example_ids: torch.Tensor) -> torch.Tensor:
    """Qwen-VL positions of a packed batch: ``[4, R, L]``, row 0 the text positions (restarting per example), rows
    1-3 the model's own ``get_rope_index`` of each example alone. Padding gets its text positions in all four."""
    text = inputs["position_ids"]  # [R, L]
    out = text.unsqueeze(0).repeat(4, 1, 1)  # [4, R, L]
    if inputs.get("video_grid_thw") is not None:
        raise ValueError("packing does not handle videos")
    types_all = inputs.get("mm_token_type_ids")
    grids = inputs.get("image_grid_thw")
    if types_all is None:
        if grids is not None:
            raise ValueError("a packed Qwen-VL batch with images needs mm_token_type_ids to compute its positions")
        return out
    next_grid = 0
    for r, row_spans in enumerate(example_spans(example_ids)):
        for start, end in row_spans:
            types = types_all[r, start:end]
            n_images = _runs(types.tolist(), 1)
            image_grid = grids[next_grid:next_grid + n_images] if n_images else None
            next_grid += n_images
            pos, _ = rope_module.get_rope_index(inputs["input_ids"][r:r + 1, start:end], mm_token_type_ids=types[None],
                                                image_grid_thw=image_grid)  # [3, 1, n]
            out[1:, r, start:end] = pos[:, 0].to(out.device)
    if grids is not None and next_grid != len(grids):
        raise ValueError(f"the packed batch has {len(grids)} image grids but {next_grid} images in its tokens")
    return out


def packed_position_ids(model, inputs: dict, example_ids: torch.Tensor) -> torch.Tensor:
    """The ``position_ids`` the model gets for a packed batch: the collator's ``[R, L]`` restarting positions, or
    for Qwen-VL models ``[4, R, L]`` (``mrope_position_ids``)."""
    rope_module = rope_index_module(model)
    if rope_module is None:
        return inputs["position_ids"]
    return mrope_position_ids(rope_module, inputs, example_ids)


def check_packing_supported(model) -> None:
    """Raise a clear error at start-up when ``padding_free=True`` cannot be exact for ``model``."""
    name = type(model).__name__
    if name in PACKING_REFUSED:
        raise ValueError(f"padding_free=True is not supported for {name}: {PACKING_REFUSED[name]}. Set "
                         "padding_free=False.")
    if name not in PACKING_MODEL_CLASSES:
        raise ValueError(
            f"padding_free=True is not supported for {name}: packed batches are verified exact only for "
            f"{', '.join(PACKING_MODEL_CLASSES)} (their language model masks attention between examples from the "
            "restarting position_ids, and their image features follow the image tokens in order). Set "
            "padding_free=False.")
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    impl = getattr(text_config, "_attn_implementation", None) or impl
    if impl not in PACKING_ATTENTION:
        raise ValueError(
            f"padding_free=True is not supported for {name} with attn_implementation={impl!r}: packed examples are "
            f"kept apart only by {', '.join(PACKING_ATTENTION)} (masks built from the restarting position_ids). "
            "Choose one of those or set padding_free=False.")
