"""Shared helpers of the reliability tests: a tiny local Qwen2-VL, small good datasets, JSONL writers.

Everything is built locally (no download) and kept small so that a training step takes well under a second on a
CPU. The tiny model is built once per test process and saved to a temporary folder.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

CORPUS = [
    "<think>I look at the grid. The red circle is top left; there are 3 shapes.</think><answer>3</answer>",
    "<think>Count the blue squares: one, two. So the answer is B.</think><answer>B</answer>",
    "How many shapes are in the image? Options: (A) 1 (B) 2 (C) 3. Answer with the letter.",
    "What colour is the shape in the middle? red green blue yellow circle square triangle",
]
TINY_KW = dict(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
               vision_depth=1, vision_width=32)


def build_tiny(path: str | Path, seed: int = 0) -> Path:
    """Build and save the tiny Qwen2-VL (safetensors + processor) to ``path``."""
    from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny

    model, processor = build_tiny_qwen2_vl(CORPUS * 8, seed=seed, **TINY_KW)
    return save_tiny(model, processor, path)


@functools.cache
def tiny_model_dir() -> Path:
    """The tiny model, built once per process into a temporary folder (removed at interpreter exit)."""
    tmp = tempfile.TemporaryDirectory(prefix="scale-vlm-tiny-")
    _KEEP.append(tmp)
    return build_tiny(Path(tmp.name) / "tiny")


_KEEP: list = []


def load_tiny_processor():
    from scale_vlm.processors import load_processor

    return load_processor(str(tiny_model_dir()))


def noise_weights(model, std: float = 0.5, seed: int = 0) -> None:
    """Add seeded Gaussian noise to every weight, the same on every rank. The tiny random model's outputs barely
    depend on its input (nearly flat logits, one token over and over); noised, its completions differ by question
    and its samples follow the model rather than the random numbers."""
    import torch

    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * std)


def colour_image(i: int, size: int = 48) -> Image.Image:
    colours = [(220, 30, 30), (30, 160, 30), (30, 30, 220), (230, 200, 20)]
    return Image.new("RGB", (size, size), colours[i % len(colours)])


def good_response(i: int) -> str:
    return (f"<think>I look at the grid and count the shapes: there are {i % 5 + 1} of them, "
            f"the first one is {'red' if i % 2 else 'blue'}.</think><answer>{i % 5 + 1}</answer>")


def good_row(i: int, image) -> dict:
    """A TRL conversational row with one image (``image`` may be a path string or a PIL image)."""
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"How many shapes? ({i})"}]},
            {"role": "assistant", "content": [{"type": "text", "text": good_response(i)}]},
        ],
        "images": [image],
    }


def write_good_jsonl(folder: str | Path, n: int, name: str = "train.jsonl") -> Path:
    """``n`` good rows with PNG images under ``folder/images``; image paths are relative to the JSONL file."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"images/good_{i}.png"
        colour_image(i).save(folder / rel)
        rows.append(good_row(i, rel))
    path = folder / name
    write_jsonl(path, rows)
    return path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def subprocess_env(**extra: str) -> dict:
    """Environment of a training subprocess: offline, quiet, single-threaded BLAS, this checkout importable."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        PYTHONUNBUFFERED="1",
        WANDB_DISABLED="true",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


PYTHON = sys.executable


def end_distributed_worker(status: int = 0) -> None:
    """End a multi-process check's worker once its results are written: destroy the process group, flush, and
    leave with ``status`` without the interpreter's shutdown.

    Why not a normal exit: the libraries under test keep references to the process group in caches of their own
    (``torch._dynamo`` when first imported after the group exists, DTensor's sharding-propagation cache under FSDP2,
    DeepSpeed's ``groups`` module), so the group outlives ``destroy_process_group`` and gloo's worker threads
    (``pt_gloo_runloop``, ``gloo_tcp_loop``) are still running while the interpreter and the C++ runtime tear down;
    now and then that aborts the process ("terminate called without an active exception", SIGABRT) after its
    results were written. ``os._exit`` skips that teardown; ``status`` is still the process's exit status, so a
    worker that fails still fails its test.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
