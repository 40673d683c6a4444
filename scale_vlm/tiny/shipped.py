"""The shipped tiny base VLM: where it lives, saving it for shipping, loading it for training, and building it
when a checkout has no weights."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import save_tiny

SHIPPED_BASE = Path(__file__).resolve().parent.parent / "assets" / "tiny-base"


def save_base(model, processor, path: str | Path, fp16: bool = True) -> Path:
    """Save (as fp16 safetensors by default: ~4 MB) for shipping."""
    if fp16:
        model = model.to(torch.float16)
    path = save_tiny(model, processor, path)
    if fp16:
        model.to(torch.float32)
    return path


def load_base(path: str | Path | None = None):
    """A fresh float32 copy of a model and its processor (the shipped base by default), ready to train or evaluate
    on a CPU: :func:`scale_vlm.model_loading.load_model`, the one loader, with this package's defaults."""
    from ..model_loading import load_model
    from ..processors import load_processor

    path = str(path) if path is not None else str(SHIPPED_BASE)
    return load_model(path, dtype=torch.float32), load_processor(path)


def has_shipped_base() -> bool:
    return (SHIPPED_BASE / "model.safetensors").is_file() and (SHIPPED_BASE / "config.json").is_file()


def get_base(cache_dir: str | Path | None = None, progress: bool = True):
    """The shipped base model if present, else a cached build in ``cache_dir``, else build (and cache) it."""
    if has_shipped_base():
        return load_base()
    if cache_dir is not None and (Path(cache_dir) / "model.safetensors").is_file():
        return load_base(cache_dir)
    from .base_stage import train_base

    model, processor, _ = train_base(progress=progress)
    if cache_dir is not None:
        save_base(model, processor, cache_dir)
        return load_base(cache_dir)
    return model, processor
