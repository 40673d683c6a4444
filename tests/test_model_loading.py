"""scale_vlm.model_loading.load_model: the one loader behind sft, grpo, eval, the lmms-eval model, the trainers given
a name, and the demo's stages."""

from __future__ import annotations

import pytest
import torch

from scale_vlm.model_loading import load_model, resolve_device, resolve_dtype
from scale_vlm.tiny.corpus import corpus_texts
from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Qwen2-VL saved in float16 (as the shipped base is), and a LoRA run on it."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("loading")
    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=2), vocab_size=300, num_layers=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # values an fp16 round trip changes, so the dtype checks can fail
    base = save_tiny(model.to(torch.float16), processor, root / "base")
    lora = get_peft_model(model.to(torch.float32), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)  # a non-zero adapter, so that a load without it shows in the outputs
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(root / "lora")
    processor.save_pretrained(root / "lora")
    return {"base": str(base), "lora": str(root / "lora")}


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_dtype_is_the_checkpoints_or_the_one_asked_for(saved):
    from safetensors.torch import load_file

    stored = load_file(f"{saved['base']}/model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    as_float32 = load_model(saved["base"], dtype="float32")
    assert {p.dtype for p in as_float32.parameters()} == {torch.float32}
    assert load_model(saved["base"], dtype="auto").dtype == torch.float16  # the checkpoint's own
    assert load_model(saved["base"], dtype=torch.bfloat16).dtype == torch.bfloat16
    # float32 is exact: the checkpoint's fp16 values, upcast (what loading then casting gave)
    upcast = {k: v.to(torch.float32) for k, v in _weights(load_model(saved["base"], dtype="auto")).items()}
    weights = _weights(as_float32)
    assert sorted(weights) == sorted(upcast) and all(torch.equal(weights[k], upcast[k]) for k in weights)


@pytest.mark.parametrize("bad", ["fp16", "int8", "float64"])
def test_an_unknown_dtype_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=rf"--dtype must be auto, float32, bfloat16, float16, got '{bad}'"):
        resolve_dtype(bad)


def test_a_device_this_machine_lacks_is_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")


@pytest.mark.parametrize("train_adapter", [True, False])
def test_a_lora_run_loads_as_its_base_with_its_adapter(saved, train_adapter):
    from peft import PeftModel

    model = load_model(saved["lora"], dtype="float32", train_adapter=train_adapter)
    assert isinstance(model, PeftModel)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    if train_adapter:  # training continues the adapter, and only the adapter: 1 layer x q/v x A/B
        assert len(trainable) == 4 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    else:
        assert trainable == []
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.all(p == 0.5) for p in lora_b)  # the run's adapter, not a fresh one
    base = load_model(saved["base"], dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_the_device_and_the_rope_cache(saved):
    model = load_model(saved["base"], dtype="float32", device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.model.rope_deltas is None


def test_every_job_loads_through_it():
    """No other module calls ``from_pretrained`` on a model class: a second loader would drift from this one."""
    import pathlib
    import re

    package = pathlib.Path(__file__).resolve().parent.parent / "scale_vlm"
    callers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if re.search(r"AutoModel\w*\.from_pretrained|PeftModel\.from_pretrained", p.read_text()))
    assert callers == ["model_loading.py"]
