"""Batched greedy generation for evaluation, and token counts of the think and answer parts of each output."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.render import add_special_tokens, chat_template_kwargs, reasoning_format, special_token_ids
from ..parsing import as_tagged
from ..segments import DEFAULT_TAGS, Tags
from .adapters import EvalExample


def chat_text(processor, example: EvalExample) -> str:
    """The prompt as the model's chat template renders it, one image placeholder per image, ready to generate
    (thinking on where the template reads ``enable_thinking``, as in training)."""
    content = [{"type": "image"} for _ in example.images] + [{"type": "text", "text": example.prompt}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True,
        **chat_template_kwargs(processor),
    )


def decode_completions(tokenizer, new_tokens, keep: set[int]) -> list[str]:
    """Generated ids as text with special tokens dropped, except ``keep`` (a family's reasoning delimiters that are
    special tokens, e.g. Gemma-4's ``<|channel>`` / ``<channel|>``, which the parser must see)."""
    if not keep:
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    drop = special_token_ids(tokenizer) - keep
    rows = new_tokens.tolist() if hasattr(new_tokens, "tolist") else new_tokens
    return [tokenizer.decode([t for t in row if t not in drop], skip_special_tokens=False) for row in rows]


def delimiter_token_ids(tokenizer, fmt) -> set[int]:
    """Ids of the special tokens inside the family's reasoning delimiters (empty when the tags are plain text)."""
    if not fmt.from_field:
        return set()
    specials = special_token_ids(tokenizer)
    ids = tokenizer(fmt.think_open + " " + fmt.think_close, add_special_tokens=False)["input_ids"]
    return {i for i in ids if i in specials}


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


@contextlib.contextmanager
def left_padding(processor) -> Iterator[None]:
    """Decoder-only batched generation needs the prompts right-aligned: pad on the left, restore afterwards."""
    tokenizer = _tokenizer(processor)
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = previous


def _greedy_config(model, tokenizer, max_new_tokens: int):
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    # Sampling knobs left from the checkpoint only trigger "ignored" warnings under greedy decoding.
    config.temperature = config.top_p = config.top_k = None
    config.max_new_tokens = max_new_tokens
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return config


def reset_rope_cache(model) -> None:
    """Forget the multimodal rope offsets Qwen2-VL-style models cache from their last batch (``rope_deltas``): a
    stale value breaks the next prompt's positions. Accepts a model wrapped by DDP (``.module``); a no-op for
    models without the cache. Used around generation (evaluation, GRPO) and the tiny base model's training."""
    model = getattr(model, "module", model)
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None


@contextlib.contextmanager
def fsdp2_root_unsharded(model) -> Iterator[None]:
    """Hold the root FSDP2 unit's own parameters gathered while ``model`` generates; a no-op for other models.

    FSDP2 (``fully_shard``) gathers a unit's parameters in that unit's forward pre-hook. A VLM's ``generate`` encodes
    the images before the first forward of the root module (transformers'
    ``_prepare_multimodal_encoder_kwargs_for_generation``), so parameters that belong to the root unit rather than
    to a block (Qwen2-VL's patch embedding) are still shards there: ``aten.convolution.default: got mixed
    torch.Tensor and DTensor``. TRL treats FSDP2 as needing nothing for generation. The block units keep
    gathering in their own hooks; only the root's parameters (the few outside every block) stay gathered."""
    from torch.distributed.fsdp import FSDPModule

    root = next((m for m in getattr(model, "module", model).modules() if isinstance(m, FSDPModule)), None)
    if root is None:
        yield
        return
    # The root's first forward would initialise the FSDP state (which unit is root, the process group of each);
    # generate may use the root's parameters before any forward. _lazy_init returns at once if already done.
    root._get_fsdp_state()._lazy_init()
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


@dataclass(frozen=True)
class Completion:
    """One greedy completion: its text, and whether it ran out of ``max_new_tokens`` before an end-of-sequence token
    (its ``<answer>`` may have been cut off, so a malformed reply can be the budget's fault, not the model's)."""

    text: str
    hit_budget: bool


def budget_hits(new_tokens, eos_token_ids: set[int], max_new_tokens: int) -> list[bool]:
    """Per row of generated ids ``(batch, new)``: True where the row holds no end-of-sequence token and filled the
    budget. A row that ended early is padded after its end token; a batch whose rows all ended early is shorter."""
    rows = new_tokens.tolist() if hasattr(new_tokens, "tolist") else new_tokens
    return [len(row) >= max_new_tokens and not any(t in eos_token_ids for t in row) for row in rows]


def _eos_ids(config) -> set[int]:
    eos = config.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def generate_batch(
    model, processor, examples: Sequence[EvalExample], max_new_tokens: int = 256, batch_size: int = 16,
    progress: bool = True, tags: Tags = DEFAULT_TAGS,
) -> list[str]:
    """The texts of :func:`generate_completions`."""
    return [c.text for c in generate_completions(model, processor, examples, max_new_tokens=max_new_tokens,
                                                 batch_size=batch_size, progress=progress, tags=tags)]


@torch.no_grad()
def generate_completions(
    model, processor, examples: Sequence[EvalExample], max_new_tokens: int = 256, batch_size: int = 16,
    progress: bool = True, tags: Tags = DEFAULT_TAGS, synced_gpus: bool | None = None,
) -> list[Completion]:
    """Greedy completions for ``examples``, decoded with special tokens skipped, in input order, written in ``tags``
    (:func:`scale_vlm.parsing.as_tagged`: a think block the generation prompt opened is closed back in front, a
    family's own reasoning delimiters become the configured think tags), each marked where it hit the budget.

    ``synced_gpus=True`` keeps every process generating until all have finished the batch (``generate``'s own
    option; None leaves it to ``generate``): processes that generate for different questions on a sharded model
    (ZeRO-3, FSDP) must run the same number of forward passes, and need the same number of batches too."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    tokenizer = _tokenizer(processor)
    fmt = reasoning_format(processor, tags)
    keep = delimiter_token_ids(tokenizer, fmt)
    config = _greedy_config(model, tokenizer, max_new_tokens)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos_ids = _eos_ids(config)
    outputs: list[Completion] = []
    bar = tqdm(total=len(examples), desc="generating", unit="ex", disable=not progress)
    try:
        # one gathering of the FSDP2 root's parameters for all the batches, not one per batch
        with left_padding(processor), fsdp2_root_unsharded(model):
            for start in range(0, len(examples), batch_size):
                batch = examples[start : start + batch_size]
                texts = [chat_text(processor, ex) for ex in batch]
                # One image list per prompt: processors that group images by sample (Gemma-3, Idefics3) read a
                # flat list as one sample with N images. An empty list stands for a question without images.
                images = [list(ex.images) for ex in batch]
                inputs = processor(text=texts, images=images if any(images) else None, return_tensors="pt", padding=True,
                                   add_special_tokens=add_special_tokens(tokenizer, texts[0]))
                inputs = inputs.to(device)
                reset_rope_cache(model)
                generated = model.generate(**inputs, generation_config=config, synced_gpus=synced_gpus)
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                decoded = decode_completions(tokenizer, new_tokens, keep)
                outputs += [Completion(as_tagged(text, fmt, tags), hit) for text, hit in
                            zip(decoded, budget_hits(new_tokens, eos_ids, max_new_tokens))]
                bar.update(len(batch))
    finally:
        bar.close()
        reset_rope_cache(model)
        model.train(was_training)
    return outputs


def count_tokens(text: str | None, tokenizer) -> int:
    if not text:
        return 0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])

