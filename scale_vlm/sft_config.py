"""Configuration of SCALe / vanilla SFT: TRL's ``SFTConfig`` plus the segment loss, schedule and data policy."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from trl import SFTConfig

from .loss import NORMALIZATIONS
from .schedules import DEFAULT_ANSWER_WEIGHTS, ScheduleFields
from .segments import TagFields, Tags

METHODS = ("scale", "vanilla")
LOSS_IMPLS = ("fused", "plain")


@dataclass
class ScaleSFTConfig(SFTConfig, ScheduleFields, TagFields):
    """``SFTConfig`` with SCALe's fields. Defaults differ from TRL where CPU use or VLM data requires it:
    ``bf16`` is off without a GPU, ``remove_unused_columns`` is off (rendered columns feed the collator),
    ``activation_checkpointing`` is off (turn it on for large models)."""

    method: str = field(default="scale", metadata={"help": "'scale' (segment-weighted) or 'vanilla' (token-mean CE)."})
    normalization: str = field(
        default="sample",
        metadata={"help": "'sample': segment means per example, then the mean over examples; "
                  "'batch': segment means over all tokens of the segment in the global batch."},
    )
    loss_impl: str = field(
        default="fused",
        metadata={"help": "'fused': the chunked LM head of scale_vlm.fused_loss computes the weighted NLL and its "
                  "gradient tile by tile, never building [tokens, vocab] logits; 'plain': full logits + "
                  "cross-entropy (reference)."},
    )
    bad_example_policy: str = field(
        default="error", metadata={"help": "'error': stop at the first bad example; 'skip': drop, count and report."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder that relative image paths resolve against."})
    freeze_vision_tower: bool = field(
        default=False,
        metadata={"help": "Keep the vision encoder frozen (the projector/merger into the LM stays trainable only "
                  "where it is a separate module, e.g. LLaVA's multi_modal_projector)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh in an output_dir holding a previous run: its files are moved "
                                 "into output_dir/previous-run-<time>/ (never deleted)."}
    )
    packing_row_tokens: int | None = field(
        default=None,
        metadata={"help": "padding_free=True: tokens per packed row (first-fit-decreasing). Default: the longest "
                  "example of the micro-batch, which keeps dense-mask attention (CPU, sdpa/eager) no costlier than "
                  "the padded batch; with varlen flash attention a large value (one row) wastes nothing."},
    )
    # Overridden defaults
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: rendered columns feed the collator."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations to save memory."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias of activation_checkpointing."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; defaults to on only with a GPU."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if not torch.cuda.is_available():
            # Pinned memory only helps copies to a GPU; without one torch warns about it every epoch.
            self.dataloader_pin_memory = False
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl must be one of {LOSS_IMPLS}, got {self.loss_impl!r}")
        if self.packing_row_tokens is not None and self.packing_row_tokens < 1:
            raise ValueError(f"packing_row_tokens must be positive, got {self.packing_row_tokens}")
        if self.bad_example_policy not in ("error", "skip"):
            raise ValueError(f"bad_example_policy must be 'error' or 'skip', got {self.bad_example_policy!r}")
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        _ = self.weight_schedule  # validates the schedule fields
        _ = self.adaptive_progress  # validates progress_mode and the adaptive_* fields
        _ = self.tags  # validates the tags
        check_training_length(self)
        if self.method == "scale":
            schedule = self.weight_schedule
            points = (0.0, 0.25, 0.5, 0.75, 1.0, self.schedule_step_at)
            if all(sum(schedule(p)) == 0 for p in points):
                # Loss and gradient would be 0 at every step: a "trained" model that is the initial one.
                raise ValueError(
                    "every schedule weight is 0 (think_weight_start/end, answer_weight_start/end), so the loss and its "
                    "gradient are 0 at every step and nothing is learnt; give the think or answer segment a positive "
                    f"weight, e.g. --answer_weight_start {DEFAULT_ANSWER_WEIGHTS[0]} "
                    f"--answer_weight_end {DEFAULT_ANSWER_WEIGHTS[1]}"
                )


# The options scale-vlm adds to TRL's SFTConfig (its own fields and the schedule and tag fields it inherits),
# derived so that a field added to ScheduleFields or the config is never missing from the lists built from it.
SCALE_SFT_FIELDS = tuple(f.name for f in fields(ScaleSFTConfig) if f.name not in {f.name for f in fields(SFTConfig)})
SCHEDULE_FIELDS = tuple(f.name for f in fields(ScheduleFields))
# Everything the segment loss of a step depends on (the tags and the untagged-answer option decide the segments): a
# resumed run must not change any of them.
SEGMENT_LOSS_FIELDS = ("method", "normalization", *SCHEDULE_FIELDS, *(f.name for f in fields(Tags)))


def check_training_length(args) -> None:
    """Refuse a run that would train no step (shared by the SFT and GRPO configs)."""
    if args.max_steps == 0:
        raise ValueError("max_steps is 0, so no step would be trained; give a positive --max_steps, or leave it at -1 "
                         "to train for --num_train_epochs")
    if args.max_steps < 0 and not args.num_train_epochs > 0:
        raise ValueError(f"num_train_epochs is {args.num_train_epochs} and max_steps is unset, so no step would be "
                         "trained; give a positive --num_train_epochs or --max_steps")
