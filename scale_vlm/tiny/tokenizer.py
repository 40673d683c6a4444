"""A byte-level BPE tokenizer trained locally, shaped like Qwen2's.

The reasoning tags (``<think>``, ``</think>``, ``<answer>``, ``</answer>``) are deliberately NOT special tokens,
exactly as in Qwen2.5-VL's real vocabulary: they are split into pieces that merge with neighbouring characters,
which is what segment assignment by character offsets has to cope with.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Special tokens of the Qwen2-VL family, in the order Qwen gives them ids.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_IMAGE_TOKEN = "<image>"

# Qwen2-VL's chat template, reduced to what image+text chats need. Content is inserted verbatim.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5 style template ("USER: <image>\n... ASSISTANT: ...</s>").
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|endoftext|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def train_byte_level_bpe(
    corpus: Iterable[str], vocab_size: int = 1024, extra_special_tokens: tuple[str, ...] = ()
) -> Tokenizer:
    """Train a GPT-2/Qwen-style byte-level BPE on ``corpus`` (no download)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    special = QWEN_SPECIAL_TOKENS + [t for t in extra_special_tokens if t not in QWEN_SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, flavour: str = "qwen"
) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` with the special tokens and chat template of ``flavour`` (qwen | llava)."""
    extra = (LLAVA_IMAGE_TOKEN,) if flavour == "llava" else ()
    raw = train_byte_level_bpe(corpus, vocab_size=vocab_size, extra_special_tokens=extra)
    kwargs = dict(
        tokenizer_object=raw,
        eos_token="<|im_end|>" if flavour == "qwen" else "<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    if flavour == "qwen":
        tokenizer = PreTrainedTokenizerFast(**kwargs, extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    elif flavour == "llava":
        tokenizer = PreTrainedTokenizerFast(**kwargs, extra_special_tokens={"image_token": LLAVA_IMAGE_TOKEN})
        tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    else:
        raise ValueError(f"unknown tokenizer flavour {flavour!r}; expected 'qwen' or 'llava'")
    return tokenizer
