"""The one way scale-vlm loads a model: ``sft``, ``grpo``, ``eval``, the lmms-eval model, the trainers given a name,
and the demo's and comparison's stages all call :func:`load_model`.

What it decides, once:
- ``AutoModelForImageTextToText`` with the caller's revision, attention implementation and dtype; remote code only
  when asked for (``trust_remote_code`` is never on by default);
- a LoRA run (a folder holding ``adapter_config.json``, a ``scale-vlm sft --use_peft`` output) loads as its base
  model with the run's adapter on it: trainable when training continues it (GRPO), frozen for evaluation;
- a quantised model is placed whole on this process's GPU (bitsandbytes weights cannot be moved afterwards);
- ``dtype`` is ``None`` (transformers' default), ``"auto"`` (the checkpoint's), a name or a ``torch.dtype``;
- the multimodal rope offsets some families cache from their last batch are cleared (a fresh model has none, a
  reused one could carry them into the next prompt).
"""

from __future__ import annotations

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype, option: str = "--dtype"):
    """``None`` and ``"auto"`` as they are, a name in :data:`DTYPE_NAMES` or a ``torch.dtype`` as a ``torch.dtype``;
    anything else refused, naming ``option``."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"{option} must be auto, {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype)


def resolve_device(name: str):
    """``auto`` (a GPU when there is one) or a device name, refused when this machine lacks it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name ({err}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"--device {name}: {build}; use --device cpu (or auto, which picks a GPU when there is one)")
    return device


def load_model(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None,
               attn_implementation: str | None = None, dtype=None, quantization_config=None, device=None,
               train_adapter: bool = False, **from_pretrained_kwargs):
    """The model in ``name_or_path`` (a hub name, a model folder or a LoRA run), on ``device`` when given.

    ``train_adapter``: a LoRA run's adapter loads trainable (training continues it; TRL's GRPO then copies it as the
    frozen KL reference when ``beta`` > 0), else frozen. ``from_pretrained_kwargs`` go to ``from_pretrained``
    (TRL's ``model_init_kwargs``)."""
    from transformers import AutoModelForImageTextToText

    from .eval.generate import reset_rope_cache
    from .lora import adapter_base, is_lora_run

    kwargs = dict(from_pretrained_kwargs, trust_remote_code=trust_remote_code)
    if revision is not None:
        kwargs["revision"] = revision
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        from accelerate import PartialState

        kwargs.update(quantization_config=quantization_config, device_map={"": PartialState().local_process_index})
    if is_lora_run(name_or_path):
        from peft import PeftModel

        kwargs.pop("revision", None)  # the revision of a hub model, not of the run's local base
        base = AutoModelForImageTextToText.from_pretrained(adapter_base(name_or_path), **kwargs)
        model = PeftModel.from_pretrained(base, name_or_path, is_trainable=train_adapter)
    else:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
    if device is not None:
        model = model.to(device)
    reset_rope_cache(model)
    return model


def load_checkpoint_weights(trainer, checkpoint: str, model=None) -> bool:
    """Restore a trainer's weights from a ``checkpoint-<step>`` folder as ``from_pretrained`` reads it; False where
    Trainer's own loading must do it (sharded DeepSpeed/FSDP states, PEFT adapters, no safetensors).

    Trainer restores weights with ``load_state_dict(strict=False)``. VLM checkpoints are saved under the checkpoint
    key names (Qwen2-VL: "model.layers.*", "visual.*"), which differ from the live module names
    ("model.language_model.*", "model.visual.*"), so nothing would match and the run would silently resume from its
    initial weights. ``from_pretrained`` applies the key conversion; ``strict=True`` leaves nothing out."""
    import os

    model = trainer.model if model is None else model
    unwrapped = trainer.accelerator.unwrap_model(model)
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    has_safetensors = any(os.path.isfile(os.path.join(checkpoint, f))
                          for f in ("model.safetensors", "model.safetensors.index.json"))
    if not has_safetensors or sharded or hasattr(unwrapped, "peft_config"):
        return False
    dtype = next(unwrapped.parameters()).dtype
    loaded = type(unwrapped).from_pretrained(checkpoint, dtype=dtype)
    unwrapped.load_state_dict(loaded.state_dict(), strict=True)
    return True
