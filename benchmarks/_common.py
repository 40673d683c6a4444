"""Shared pieces of the benchmarks: the tiny VLM, its data, the SFT config and trainer, machine description, JSON
output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clean clone


def tiny_model_and_data(num_examples: int, seed: int = 0):
    """The tiny Qwen2-VL (default ``build_tiny_qwen2_vl`` sizes) and the built-in benchmark in training format."""
    from scale_vlm.bench import BenchConfig, make_benchmark, to_training_format
    from scale_vlm.tiny.corpus import corpus_texts
    from scale_vlm.tiny.model import build_tiny_qwen2_vl

    model, processor = build_tiny_qwen2_vl(list(corpus_texts(seed=seed, per_setting=50)), seed=seed)
    raw = make_benchmark(BenchConfig(seed=seed, num_examples=num_examples, split="train"))
    return model, processor, raw, to_training_format(raw)


def machine(device: str) -> dict:
    """What the figures were measured on: the run records' machine (CPU model, GPU, library releases), the platform,
    cores, torch threads and the load at the end."""
    import torch

    from scale_vlm.stages import machine as run_machine

    info = {"platform": platform.platform(), **run_machine(), "torch_threads": torch.get_num_threads()}
    try:
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if not device.startswith("cuda"):
        info["gpu"] = None  # a GPU on the machine that the benchmark did not use
    return info


def write_json(path: str | None, report: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


def loss_impls(text: str) -> list[str]:
    """The comma-separated ``--loss-impls`` value: names of ``ScaleSFTConfig.loss_impl`` (``fused``, the default
    chunked head of ``scale_vlm.fused_loss``, or ``plain``, full logits + cross-entropy)."""
    from scale_vlm.sft_config import LOSS_IMPLS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in LOSS_IMPLS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or 'empty list'}; choose among "
                         f"{', '.join(LOSS_IMPLS)} (the values of ScaleSFTConfig.loss_impl)")
    return names


def trainer_parser(doc: str) -> argparse.ArgumentParser:
    """The options the trainer benchmarks share: device, loss paths, threads, JSON output; add your own."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--loss-impls", default="fused,plain", type=loss_impls,
                   help="comma-separated ScaleSFTConfig.loss_impl values: fused (trainer default, scale_vlm.fused_loss) "
                        "and plain (full logits)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: 1 on CPU)")
    p.add_argument("--out", default=None)
    return p


def seed_torch(args) -> None:
    """One intra-op thread on CPU unless ``--threads`` says otherwise (stable timings on a shared machine); seed 0."""
    import torch

    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    torch.manual_seed(0)


def sft_config(output_dir: str, loss_impl: str, args, *, steps: int, batch_size: int, learning_rate: float,
               **overrides):
    """A benchmark's SFT config: the demo's recipe (``scale_vlm.drivers.sft_args``: cosine, warm-up, AdamW,
    clipping), SCALe with its default schedule, seed 0, no progress bars, on ``--device``, plus ``overrides``."""
    from scale_vlm.drivers import sft_args

    return sft_args(output_dir, "scale", {}, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=0,
                    progress=False, use_cpu=args.device == "cpu", loss_impl=loss_impl, **overrides)


def make_trainer(loss_impl: str, args, data, *, steps: int, batch_size: int, **overrides):
    """The shared trainer (``scale_vlm.drivers.build_sft_trainer``) on the benchmark data, configured by
    :func:`sft_config` (learning rate 1e-4, examples up to 1024 tokens) plus ``overrides``."""
    import tempfile

    from scale_vlm.drivers import build_sft_trainer

    model, processor, _, train = data
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sft_config(tmp, loss_impl, args, steps=steps, batch_size=batch_size, learning_rate=1e-4,
                         max_length=1024, **overrides)
        return build_sft_trainer(model, processor, cfg, train)
