"""Tiny vision-language models built locally from real transformers architectures (no download).

``build_tiny_qwen2_vl`` gives a ~2M-parameter ``Qwen2VLForConditionalGeneration`` whose image geometry matches
the built-in benchmark: 48x48 images, 8-px patches merged 2x2, so every 16-px grid cell is exactly one image
token. ``build_tiny_llava`` gives a LLaVA with a tiny CLIP tower for format coverage in tests.
Both are saved with ``save_pretrained`` and load back through the Auto classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..processors import build_image_only_processor
from .tokenizer import build_tokenizer

TINY_IMAGE_SIZE = 48  # pixels per side
TINY_PATCH = 8  # vision patch size; 2x2 merge -> one image token per 16-px cell


def _qwen_image_processor() -> Qwen2VLImageProcessorPil:
    side = TINY_IMAGE_SIZE
    return Qwen2VLImageProcessorPil(
        patch_size=TINY_PATCH,
        temporal_patch_size=1,
        merge_size=2,
        # min == max pixels pins every image to 48x48: one fixed token count per image.
        size={"shortest_edge": side * side, "longest_edge": side * side},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def build_tiny_qwen2_vl(
    corpus: Iterable[str],
    vocab_size: int = 1024,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 512,
    vision_depth: int = 2,
    vision_width: int = 128,
    seed: int = 0,
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """A randomly initialised tiny Qwen2-VL and its processor, tokenizer trained on ``corpus``."""
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size, flavour="qwen")
    head_dim = hidden_size // num_heads
    # mrope_section sums to head_dim / 2 (temporal, height, width rotary sections).
    quarter = head_dim // 2
    mrope = [quarter - 2 * (quarter * 3 // 8), quarter * 3 // 8, quarter * 3 // 8]
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=vision_depth,
            embed_dim=vision_width,
            hidden_size=hidden_size,
            num_heads=4,
            mlp_ratio=4,
            patch_size=TINY_PATCH,
            spatial_merge_size=2,
            temporal_patch_size=1,
            in_channels=3,
        ),
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    processor = build_image_only_processor(
        Qwen2VLProcessor, _qwen_image_processor(), tokenizer, chat_template=tokenizer.chat_template
    )
    return model, processor


def build_tiny_llava(
    corpus: Iterable[str], vocab_size: int = 1024, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A randomly initialised tiny LLaVA (CLIP tower + Llama text model) and its processor."""
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size, flavour="llava")
    image_size, patch = 32, 8
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch, projection_dim=32,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return model, processor


def _set_generation_ids(model, tokenizer) -> None:
    # Explicit ids: generation otherwise falls back to ids of the full-size default config.
    gc = model.generation_config
    gc.eos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = tokenizer.pad_token_id


def save_tiny(model, processor, path: str | Path) -> Path:
    """Save weights as safetensors plus the processor, loadable with the Auto classes."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path
