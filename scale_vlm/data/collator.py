"""Batch collation of rendered examples."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..packing import first_fit_decreasing, pack_rows
from ..segments import SEGMENT_PROMPT
from .render import PER_TOKEN_EXTRAS

_PER_TOKEN_PAD = {"input_ids": None, "attention_mask": 0, "labels": -100, "segment_ids": SEGMENT_PROMPT}


@dataclass
class ScaleCollator:
    """Pads rendered examples (right padding) and turns their images into pixel tensors.

    Input: rows of ``prepare_dataset`` (``input_ids``, ``attention_mask``, ``labels``, ``segment_ids``, optional
    ``mm_token_type_ids``, ``images``). Output, B examples padded to length L:

        input_ids          [B, L]  long   pad = tokenizer pad id
        attention_mask     [B, L]  long   0 on padding
        labels             [B, L]  long   -100 on prompt, image and padding tokens
        segment_ids        [B, L]  long   0 prompt/pad, 1 think, 2 answer (aligned with input_ids)
        mm_token_type_ids  [B, L]  long   when the processor produces it (Qwen2-VL)
        token_type_ids     [B, L]  long   when the processor produces it (Gemma-3: 1 on image tokens, which attend
                                          to each other bidirectionally; training must see what generation sees)
        pixel_values, image_grid_thw, ...  from ``processor.image_processor`` over the batch's images, one list
                                          per example (processors such as Idefics3 group images by example)

    ``padding_free=True`` packs the examples into rows instead (``scale_vlm.packing``): R rows of length L, no
    ``attention_mask``, plus

        position_ids       [R, L]  long   0, 1, ... restarting with every example (and with the row's padding)
        example_ids        [R, L]  long   index of the token's example in packed order, -1 on padding

    and the images in the packed order of their examples. ``packing_row_tokens``: row capacity (default: the
    longest example of the micro-batch). A micro-batch where no two examples fit one row is padded as above.
    """

    processor: object
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    packing_row_tokens: int | None = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        keys = [k for k in ("input_ids", "attention_mask", "labels", "segment_ids", *PER_TOKEN_EXTRAS) if k in rows[0]]
        pads = {key: pad_id if _PER_TOKEN_PAD.get(key, 0) is None else _PER_TOKEN_PAD.get(key, 0) for key in keys}
        lengths = [len(r["input_ids"]) for r in rows]
        if self.padding_free and len(first_fit_decreasing(lengths, self.packing_row_tokens or max(lengths))) < len(rows):
            # No attention_mask: the masks come from the restarting position_ids (scale_vlm.packing). A micro-batch
            # in which no two examples share a row gains nothing from packing and is padded as usual below (the
            # packed path's per-example positions cost about 10% of a step on the demo's narrow lengths).
            keys = [k for k in keys if k != "attention_mask"]
            batch, order = pack_rows(rows, keys, pads, self.packing_row_tokens, self.pad_to_multiple_of)
            rows = [rows[i] for i in order]
        else:
            length = max(lengths)
            if self.pad_to_multiple_of:
                length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            batch = {key: torch.tensor([list(r[key]) + [pads[key]] * (length - len(r[key])) for r in rows],
                                       dtype=torch.long) for key in keys}
        images = [list(r.get("images") or []) for r in rows]
        if any(images):
            # One list per example with images, as the processor's own batched call passes them.
            # With the processor's own image defaults (InternVL's crop_to_patches: the tiles it counts tokens for).
            defaults = dict(getattr(type(self.processor), "images_kwargs", None) or {})
            pixels = self.processor.image_processor(images=[i for i in images if i], return_tensors="pt", **defaults)
            # Only what the processor itself hands the model (Gemma-3's image processor also returns num_crops,
            # which its processor consumes).
            names = getattr(self.processor, "model_input_names", None)
            batch.update({k: v for k, v in pixels.items() if not names or k in names})
        return batch
