"""LoRA for ``scale-vlm sft`` and ``scale-vlm grpo``: TRL's ``ModelConfig`` options, checked before the model loads,
with a default target set, and where a LoRA run (an output folder holding an adapter) finds its base model
(:func:`scale_vlm.model_loading.load_model` loads it).

Default targets: without ``--lora_target_modules`` PEFT knows no target set for most VLM classes and fails after the
model has loaded. The default here is what VLM fine-tuning recipes adapt: every linear layer of the language model
(attention and MLP projections), the vision tower, the projector and the output head left frozen.
``--lora_target_modules all-linear`` (PEFT's) adds the vision tower and projector; a list of names picks modules,
those of a type PEFT cannot wrap left out and logged (Gemma-4's vision tower names its Gemma4ClippableLinear
wrappers q_proj, ... like the language model's Linear layers; PEFT would stop at them with "is not supported").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re

from trl import ModelConfig

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
# ModelConfig's LoRA options: given without --use_peft they would do nothing
LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_parameters",
                "lora_modules_to_save", "use_rslora", "use_dora")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def is_lora_run(path: str | None) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter (a ``scale-vlm sft --use_peft`` output)."""
    return bool(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def check_lora_run(model_name_or_path: str | None, model_args: ModelConfig, command: str) -> bool:
    """Whether the model is a LoRA run, which training continues (its adapter trains, with its own rank and
    targets, on its frozen base); refused with ``--use_peft``, which would start a second adapter on it."""
    if not is_lora_run(model_name_or_path):
        return False
    if model_args.use_peft:
        raise ValueError(f"{model_name_or_path} is a LoRA run (it holds {ADAPTER_CONFIG}): {command.upper()} "
                         "continues its adapter, with the adapter's own rank and targets; drop --use_peft and the "
                         "--lora_* options (to start a new adapter instead, merge this one into its base first with "
                         "peft's merge_and_unload and pass the merged model)")
    return True


def check_lora_options(model_args: ModelConfig, command: str) -> None:
    """Refuse LoRA options that would be ignored or fail inside PEFT, before anything is loaded."""
    if not model_args.use_peft:
        given = [f"--{name}" for name in LORA_OPTIONS if getattr(model_args, name) != _DEFAULTS[name]]
        if given:
            raise ValueError(f"{', '.join(given)} set without --use_peft, so no adapter would be trained and the "
                             "option(s) would do nothing; add --use_peft true, or drop them")
        return
    r, alpha, dropout = model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout
    if not (isinstance(r, int) and r > 0):
        raise ValueError(f"--lora_r must be a positive integer (the adapter rank), got {r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"--lora_alpha must be positive (the adapter scale is lora_alpha / lora_r), got {alpha}")
    if not (0 <= dropout < 1):
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}")


def model_skeleton(model_name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The model's module tree on the meta device (no weights read, no memory), or None when it cannot be built
    (the checks that need it then run on the loaded model)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    try:
        config = AutoConfig.from_pretrained(model_name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - a skeleton is an early check only; the real load reports its own error
        logger.debug("no meta skeleton of %s: %s", model_name_or_path, err)
        return None


def _linear_names(model) -> list[str]:
    import torch

    linear = [torch.nn.Linear]
    try:
        from transformers.pytorch_utils import Conv1D

        linear.append(Conv1D)
    except ImportError:  # pragma: no cover
        pass
    return [name for name, module in model.named_modules() if isinstance(module, tuple(linear))]


def language_model_prefix(model) -> str | None:
    """Qualified name of the language model inside a VLM (``model.language_model`` for Qwen2-VL and LLaVA)."""
    getter = getattr(model, "get_decoder", None)
    decoder = getter() if callable(getter) else None
    if decoder is None or decoder is model:
        return None
    return next((name for name, module in model.named_modules() if module is decoder), None)


def default_target_modules(model) -> tuple[str, list[str]]:
    """PEFT ``target_modules`` (a regex matched against full module names) selecting every linear layer of the
    language model, and the layer names it covers (for the log)."""
    prefix = language_model_prefix(model)
    if prefix is None:
        raise ValueError(f"cannot find the language model of {type(model).__name__} to put the LoRA adapters on; "
                         "name the modules with --lora_target_modules (e.g. q_proj k_proj v_proj o_proj)")
    leaves = sorted({name.rsplit(".", 1)[-1] for name in _linear_names(model) if name.startswith(prefix + ".")})
    if not leaves:
        raise ValueError(f"{type(model).__name__}'s language model has no linear layers to adapt; name the modules "
                         "with --lora_target_modules")
    return rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})", leaves


def _is_regex(targets) -> bool:
    """PEFT reads one string holding regex characters as a regex over full module names, a list as names."""
    return isinstance(targets, str) and any(c in targets for c in "\\*()|[]?+^$")


def _target_names(targets) -> list[str] | None:
    """The names of a ``--lora_target_modules`` list (TRL turns a one-name list into a string); None for a regex,
    ``all-linear`` or no targets."""
    if targets is None or targets in ("all-linear", ["all-linear"]) or _is_regex(targets):
        return None
    return [targets] if isinstance(targets, str) else list(targets)


def _selects(name: str, targets: list[str]) -> bool:
    """PEFT's suffix rule: a module is selected by its own name or by the last parts of its full name."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _check_targets(model, targets) -> None:
    """``--lora_target_modules`` must select a linear layer: each name of a list (PEFT's suffix rule), or a regex
    (one string with regex characters, matched against full names). TRL turns a one-name list into a string."""
    if targets is None or targets in ("all-linear", ["all-linear"]):
        return
    names = _linear_names(model)
    listed = _target_names(targets)
    if listed is None:  # a regex
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in listed if not any(_selects(n, [t]) for n in names)]
    if missing:
        # a layer of a Sequential is named by its index: show it with its parent ("mlp.0")
        leaves = sorted({".".join(n.split(".")[-2:]) if n.rsplit(".", 1)[-1].isdigit() else n.rsplit(".", 1)[-1]
                         for n in names})
        raise ValueError(f"--lora_target_modules {' '.join(missing)}: no linear layer of {type(model).__name__} has "
                         f"that name; its linear layers are named {', '.join(leaves)}")


def lora_config(model_args: ModelConfig, model, command: str):
    """TRL's ``get_peft_config`` for ``model_args``, with the default targets filled in (and logged) and the
    target names checked against ``model`` (a meta skeleton or the loaded model). None without --use_peft."""
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    targets = model_args.lora_target_modules
    if targets is None:
        targets, leaves = default_target_modules(model)
        logger.info("scale-vlm %s: LoRA on the language model's linear layers (%s; vision tower, projector and "
                       "output head frozen), since --lora_target_modules is not given. Pass --lora_target_modules "
                       "all-linear to adapt the vision tower and projector too, or names to choose.",
                       command, ", ".join(leaves))
    else:
        _check_targets(model, targets)
    config = get_peft_config(dataclasses.replace(model_args, lora_target_modules=targets))
    unadaptable = _unadaptable_matches(model, targets)
    if unadaptable:
        # PEFT would stop at the first of these with "is not supported" (Gemma-4's vision projections are
        # Gemma4ClippableLinear, a wrapper holding a Linear): the names mean the layers PEFT can adapt.
        config.exclude_modules = sorted(set(config.exclude_modules or ()) | set(unadaptable))
        kinds = sorted({type(module).__name__ for name, module in model.named_modules() if name in unadaptable})
        logger.info("scale-vlm %s: --lora_target_modules also names %d modules PEFT cannot adapt (%s, e.g. %s): "
                    "left out, the adapters go on the other layers of those names. Give a regex over full module "
                    "names to choose exactly.", command, len(unadaptable), ", ".join(kinds), unadaptable[0])
    return config


def _unadaptable_matches(model, targets) -> list[str]:
    """Full names of the modules a list of target names selects (PEFT's suffix rule) whose type PEFT's LoRA cannot
    wrap; a regex or ``all-linear`` selects only what it means, so nothing is left out for those."""
    import torch

    listed = _target_names(targets)
    if listed is None:
        return []
    adaptable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                 torch.nn.MultiheadAttention)
    try:
        from transformers.pytorch_utils import Conv1D

        adaptable += (Conv1D,)
    except ImportError:  # pragma: no cover
        pass
    return [name for name, module in model.named_modules()
            if _selects(name, listed) and not isinstance(module, adaptable)]


def adapter_base(path: str) -> str:
    """The base model a LoRA run was trained on (``base_model_name_or_path`` of its adapter config), checked."""
    with open(os.path.join(path, ADAPTER_CONFIG)) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/{ADAPTER_CONFIG} names no base_model_name_or_path; set it to the base model the "
                         "adapter was trained on")
    from .run_guard import looks_local

    if looks_local(base) and not os.path.exists(base):
        raise ValueError(f"the LoRA run {path} was trained on the base model {base!r}, which is not found; put the "
                         f"base model there, or set base_model_name_or_path in {path}/{ADAPTER_CONFIG} to where it is")
    return base
