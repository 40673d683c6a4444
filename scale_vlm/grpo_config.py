"""Configuration of the GRPO stage: TRL's ``GRPOConfig`` plus reward weights, tag names and CPU-friendly defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from .segments import TagFields
from .sft_config import check_training_length


@dataclass
class ScaleGRPOConfig(GRPOConfig, TagFields):
    """``GRPOConfig`` with scale-vlm's rewards. Every TRL option (``loss_type``, ``beta``, ``num_generations``,
    ``use_vllm``, ...) stays available. Defaults differ from TRL where a CPU or a small VLM needs it: ``bf16`` is on
    only with a GPU, activation checkpointing is off (turn it on for large models), a short completion budget, 4 generations per prompt, logging every step."""

    # reward_weights (TRL's field) wins when given, e.g. with extra custom reward functions.
    accuracy_weight: float = field(default=1.0, metadata={"help": "Weight of the answer-accuracy reward."})
    format_weight: float = field(default=0.5, metadata={"help": "Weight of the think-then-answer format reward."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh in an output_dir holding a previous run: its files are moved "
                                 "into output_dir/previous-run-<time>/ (never deleted)."}
    )
    # Overridden defaults
    learning_rate: float = field(default=1e-5, metadata={"help": "The initial learning rate for AdamW."})
    num_generations: int | None = field(default=4, metadata={"help": "Completions sampled per prompt."})
    max_completion_length: int | None = field(default=256, metadata={"help": "Maximum tokens per completion."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Completions per device per step."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; defaults to on only with a GPU."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations to save memory."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias of activation_checkpointing."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if not torch.cuda.is_available():
            # Pinned memory only helps copies to a GPU; without one torch warns about it every epoch.
            self.dataloader_pin_memory = False
        for name in ("accuracy_weight", "format_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):  # a negative weight would train the policy away from it
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.reward_weights is None:
            if self.accuracy_weight == 0 and self.format_weight == 0:
                raise ValueError("accuracy_weight and format_weight are both 0, so every reward is 0 and nothing is "
                                 "learnt; give at least one a positive weight")
            self.reward_weights = [self.accuracy_weight, self.format_weight]
        super().__post_init__()
        _ = self.tags  # validates the tags
        check_training_length(self)
