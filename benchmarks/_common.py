"""Shared pieces of the benchmarks: the tiny VLM, its data, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clean clone


def tiny_model_and_data(num_examples: int, seed: int = 0):
    """The tiny Qwen2-VL (default ``build_tiny_qwen2_vl`` sizes) and the built-in benchmark in training format."""
    from scale_vlm.bench import BenchConfig, corpus_texts, make_benchmark, to_training_format
    from scale_vlm.tiny.model import build_tiny_qwen2_vl

    model, processor = build_tiny_qwen2_vl(list(corpus_texts(seed=seed, per_setting=50)), seed=seed)
    raw = make_benchmark(BenchConfig(seed=seed, num_examples=num_examples, split="train"))
    return model, processor, raw, to_training_format(raw)


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: str | None, report: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


def trainer_class(loss_impl: str):
    """``(trainer class, loss_impl for its config)``: ``fused`` (the default, ``scale_vlm.lean_loss``) or ``plain``."""
    from scale_vlm.sft_trainer import ScaleSFTTrainer

    if loss_impl not in ("fused", "plain"):
        raise ValueError(f"unknown loss_impl {loss_impl!r}; choose fused or plain")
    return ScaleSFTTrainer, loss_impl


def make_trainer(loss_impl: str, args, data, **config):
    """A ``ScaleSFTTrainer`` on the benchmark data with the shared CPU-friendly settings plus ``config``."""
    import tempfile

    from scale_vlm.sft_config import ScaleSFTConfig

    model, processor, _, train = data
    cls, impl = trainer_class(loss_impl)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScaleSFTConfig(output_dir=tmp, save_strategy="no", use_cpu=args.device == "cpu", seed=0, max_length=1024,
                             dataloader_num_workers=0, loss_impl=impl, learning_rate=1e-4, **config)
        return cls(model=model, args=cfg, train_dataset=train, processing_class=processor)
