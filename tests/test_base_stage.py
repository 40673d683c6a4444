"""The shipped tiny base model: loads through the Auto classes and perceives the benchmark's images."""

from __future__ import annotations

import pytest
import torch

from scale_vlm.tiny.base_stage import SHIPPED_BASE, has_shipped_base, parse_caption, perception_report

pytestmark = pytest.mark.skipif(not has_shipped_base(), reason="no shipped base weights (run scale-vlm build-base)")


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForImageTextToText

    from scale_vlm.processors import load_processor

    model = AutoModelForImageTextToText.from_pretrained(SHIPPED_BASE, trust_remote_code=False).float()
    return model, load_processor(str(SHIPPED_BASE))


def test_shipped_files_are_safetensors_and_small():
    names = {p.name for p in SHIPPED_BASE.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert (SHIPPED_BASE / "model.safetensors").stat().st_size < 8_000_000


def test_loads_through_auto_classes(base):
    model, processor = base
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 3_000_000
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_perception_far_above_chance(base):
    torch.manual_seed(0)
    model, processor = base
    report = perception_report(model, processor, n=40, seed=777)
    # chance: occupancy 0.5, colour 0.25, shape 0.33 (the lookup skill is reported, not asserted: docs/benchmark.md)
    assert report["occupancy"] >= 0.9, report
    assert report["colour"] >= 0.8, report
    assert report["shape"] >= 0.8, report


def test_parse_caption():
    got = parse_caption("top left red circle, middle centre blue square.")
    assert got == {0: ("red", "circle"), 4: ("blue", "square")}
