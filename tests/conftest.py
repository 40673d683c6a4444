"""Shared fixtures: tiny models built locally (no hub), small datasets in the supported formats."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The question and responses of the family conformance suite, shared (the tiny models here use the same corpus).
from families import COLOURS, QUESTION, make_response  # noqa: E402,F401


def make_image(i: int) -> Image.Image:
    return Image.new("RGB", (48, 48), COLOURS[i % 4])


ANSWERS = ["(A)", "(B) green", "(C) the blue square", "(D)"]


def varied_response(i: int) -> str:
    """Think and answer lengths both differ between examples (1-4 sentences; 1-5 answer words), so a normaliser
    computed over the wrong set of tokens or examples changes the loss (equal lengths would hide it)."""
    colour = COLOURS[i % 4]
    think = " ".join([f"I look at the image. The square is {colour}."] * (1 + (i * 3) % 4))
    return f"<think>{think}</think><answer>{ANSWERS[(i + i // 4) % 4]}</answer>"


def messages_row(i: int, response: str | None = None) -> dict:
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": response or make_response(i)}]},
        ],
        "images": [make_image(i)],
    }


CORPUS = [make_response(i, 2) for i in range(8)] + [QUESTION] * 4


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """``family_dirs(name)``: the folder of the conformance suite's tiny model of family ``name`` (tests/families.py),
    built once per session for every test module that uses it."""
    import families

    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = families.build_family(name, root / name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_qwen():
    from scale_vlm.tiny.model import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(CORPUS, vocab_size=400, hidden_size=64, num_layers=2, intermediate_size=128, vision_width=64)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tiny_qwen, tmp_path_factory):
    from scale_vlm.tiny.model import save_tiny

    return str(save_tiny(*tiny_qwen, tmp_path_factory.mktemp("tiny-qwen")))


@pytest.fixture(scope="session")
def tiny_llava():
    from scale_vlm.tiny.model import build_tiny_llava

    return build_tiny_llava(CORPUS, vocab_size=400)


@pytest.fixture()
def fresh_qwen(tiny_qwen_dir):
    """A fresh copy of the tiny Qwen2-VL (training mutates it)."""
    from scale_vlm.tiny.shipped import load_base

    return load_base(tiny_qwen_dir)


@pytest.fixture(scope="session")
def messages_dataset():
    from datasets import Dataset

    return Dataset.from_list([messages_row(i) for i in range(8)])


@pytest.fixture(scope="session")
def varied_dataset():
    from datasets import Dataset

    return Dataset.from_list([messages_row(i, varied_response(i)) for i in range(8)])
