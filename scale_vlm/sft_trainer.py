"""``ScaleSFTTrainer``: TRL's ``SFTTrainer`` with the SCALe segment loss.

A thin subclass: it renders the dataset with segments (once, before training), counts the segment normalisers of
every optimizer step (so gradient accumulation and data parallelism are exact), overrides ``compute_loss`` and adds
``loss_think`` and ``loss_answer`` to every log (vanilla runs too: measured, not used for the gradient), and the
schedule weights ``w_think`` and ``w_answer`` to every step log of a SCALe run.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import is_peft_model
from trl import SFTTrainer
from trl.trainer.utils import get_config_model_id

from .adaptive_schedule import attach_adaptive_progress, record_think_loss, schedule_progress
from .data.collator import ScaleCollator
from .data.prepare import PreparationReport, prepare_dataset
from .fused_loss import add_fused_lm_head, fused_segment_loss
from .loss import SegmentCounts, count_vector, per_token_nll, segment_loss
from .model_loading import load_checkpoint_weights
from .packing import check_packing_supported, packed_position_ids
from .parallelism import check_data_parallel_only
from .processors import load_processor
from .run_guard import attach_run_fingerprint, check_output_writable, check_resume
from .sft_config import ScaleSFTConfig

logger = logging.getLogger(__name__)


VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder")


def vision_modules(model) -> list:
    """The vision encoder modules of ``model`` (Qwen2/2.5-VL ``visual``, LLaVA/Gemma-3 ``vision_tower`` ...); raises
    if it has none, so ``freeze_vision_tower`` never silently freezes nothing."""
    found = [module for name, module in model.named_modules() if name.split(".")[-1] in VISION_MODULE_NAMES]
    if not found:
        raise ValueError(f"freeze_vision_tower: no vision module ({', '.join(VISION_MODULE_NAMES)}) in {type(model).__name__}")
    return found


def freeze_vision_tower(model) -> int:
    """Turn off gradients of the vision encoder; returns the number of parameters frozen. Raises if the model has no
    recognisable vision module."""
    frozen = 0
    for module in vision_modules(model):
        for param in module.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
                frozen += param.numel()
    return frozen


class ScaleSFTTrainer(SFTTrainer):
    """SFT on ``<think>..</think><answer>..</answer>`` data with vanilla or SCALe loss.

    ``train_dataset`` may be raw (TRL ``messages``+``images``, ShareGPT ``conversations``, ``prompt``/``completion``)
    or already prepared by ``prepare_dataset`` (it has a ``segment_ids`` column).
    """

    _tag_names = ["trl", "sft", "scale-vlm"]
    _name = "ScaleSFT"

    def __init__(self, model, args: ScaleSFTConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, **kwargs):
        if args is None:
            args = ScaleSFTConfig(output_dir="scale-sft")
        if not isinstance(args, ScaleSFTConfig):
            raise TypeError(f"args must be a ScaleSFTConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        # Found now, not at the final save after all the training (see run_guard).
        check_output_writable(args.output_dir)
        if processing_class is None:
            # Our loader works without torchvision for processors that also list a video processor.
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = load_processor(name, trust_remote_code=args.trust_remote_code)
        model_given_as_name = isinstance(model, str)
        if args.freeze_vision_tower and not model_given_as_name:
            frozen = freeze_vision_tower(model)
            logger.warning("froze %d vision-tower parameters", frozen)
        self.preparation_reports: dict[str, PreparationReport] = {}
        train_dataset = self._prepare(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._prepare(eval_dataset, processing_class, args, "eval")
        if data_collator is None:
            data_collator = ScaleCollator(processing_class, pad_to_multiple_of=args.pad_to_multiple_of,
                                          padding_free=args.padding_free, packing_row_tokens=args.packing_row_tokens)
        # TRL refuses padding_free for vision datasets and custom collators; ours packs VLM batches itself
        # (scale_vlm.packing), so SFTTrainer is set up as for padded batches and the flag is put back after.
        padding_free, args.padding_free = args.padding_free, False
        try:
            super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             processing_class=processing_class, data_collator=data_collator, **kwargs)
        finally:
            args.padding_free = padding_free
        if args.padding_free:
            # a clear error now for a model whose packed forward would not equal the padded one
            check_packing_supported(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        if args.freeze_vision_tower and model_given_as_name:
            # SFTTrainer has just built the model from the name; the optimizer does not exist yet (train() creates
            # it from the parameters that require grad), so freezing here is as if the model had been given frozen.
            if is_peft_model(self.model):
                # PEFT froze every base weight, the vision encoder's too; adapters the user aimed at it stay
                # trainable, as when a frozen model instance is wrapped.
                vision_modules(self.model)
            else:
                logger.warning("froze %d vision-tower parameters", freeze_vision_tower(self.model))
        check_data_parallel_only(self)  # a clear error instead of a silently wrong loss under TP/CP/SP
        # The fused head computes the weighted NLL chunk by chunk, with its gradient, never building the logits.
        add_fused_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        # Our loss is already normalised by the step's global counts: Trainer must not divide it again.
        self.loss_is_scaled_for_ga = True
        self._step_counts: SegmentCounts | None = None
        # Running sums over the logging window: think NLL, answer NLL, think tokens, answer tokens.
        self._segment_window = {"train": torch.zeros(4, dtype=torch.float64), "eval": torch.zeros(4, dtype=torch.float64)}
        self._weights = args.weight_schedule(0.0)
        self._progress = 0.0  # the schedule progress of the last training step (logged when adaptive)
        # Every checkpoint records the data and settings it belongs to; train() refuses a checkpoint of another run.
        attach_run_fingerprint(self)
        # progress_mode='adaptive': a callback measures the think loss per optimizer step and moves the progress.
        attach_adaptive_progress(self)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        return super().train(check_resume(self, resume_from_checkpoint), *args, **kwargs)

    def _prepare(self, dataset, processor, args: ScaleSFTConfig, split: str):
        if "segment_ids" not in dataset.column_names:
            dataset, report = prepare_dataset(
                dataset, processor, tags=args.tags, max_length=args.max_length, policy=args.bad_example_policy,
                image_root=args.image_root, num_proc=args.dataset_num_proc, progress=not args.disable_tqdm,
            )
            self.preparation_reports[split] = report
            # The one place the summary is logged: a warning only when examples were skipped.
            (logger.warning if report.num_skipped else logger.info)("%s data: %s", split, report.summary())
        if args.train_sampling_strategy == "group_by_length" and args.length_column_name not in dataset.column_names:
            # transformers' LengthGroupedSampler reads each row's length from this column (it would otherwise look
            # for the processor's first input, pixel_values, and fail): the rendered token count
            dataset = dataset.add_column(args.length_column_name, [len(ids) for ids in dataset["input_ids"]])
        return dataset

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Look at every micro-batch of the optimizer step before any forward, like Trainer does for its token
        # count, and all-reduce the segment normalisers across ranks.
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(5, dtype=torch.float64)
        for batch in batch_samples:
            # packed rows: examples are counted by example_ids, not by row
            example_ids = batch["example_ids"][:, 1:] if "example_ids" in batch else None
            counts += count_vector(batch["segment_ids"][:, 1:], example_ids)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts.to(device), reduction="sum").cpu()
        self._step_counts = SegmentCounts.from_vector(counts)
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        inputs = dict(inputs)
        segment_ids = inputs.pop("segment_ids")[:, 1:]  # [B, T-1], aligned with the next-token labels
        example_ids = inputs.pop("example_ids", None)  # [B, T] in packed batches (padding_free) only
        if example_ids is not None:
            # positions restarting per example (Qwen-VL: multimodal, from the model's get_rope_index)
            inputs["position_ids"] = packed_position_ids(model, inputs, example_ids)
            example_ids = example_ids[:, 1:]  # [B, T-1], the example of each next-token label
        inputs["use_cache"] = False
        # Training uses the optimizer step's global normalisers; evaluation batches stand alone.
        counts = self._step_counts if mode == "train" and self._step_counts is not None else None
        progress = schedule_progress(self) if mode == "train" else 1.0
        w_think, w_answer = self.args.weight_schedule(progress)
        if self.args.loss_impl == "fused":
            out, outputs = fused_segment_loss(model, inputs, segment_ids, self.args.method, w_think, w_answer,
                                             self.args.normalization, counts, example_ids)
        else:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            nll = per_token_nll(outputs.logits, labels)  # [B, T-1], 0 where the label is ignored
            out = segment_loss(nll, segment_ids, self.args.method, w_think, w_answer, self.args.normalization,
                               counts, example_ids)
        loss = out.loss
        if mode == "train" and self.accelerator.num_processes > 1:
            # DDP averages gradients over ranks while our normalisers already span all ranks.
            loss = loss * self.accelerator.num_processes

        if mode == "train":
            self._weights = (w_think, w_answer)
            self._progress = progress
        stats = torch.stack([out.think_sum, out.answer_sum, out.think_tokens, out.answer_tokens]).double().cpu()
        if mode == "train":
            record_think_loss(self, stats[0], stats[2])  # the same float64 values as the logged loss_think
        self._segment_window[mode] += stats
        if getattr(outputs, "is_top1", None) is not None:
            valid = outputs.label_mask.sum().clamp(min=1)
            self._metrics[mode]["mean_token_accuracy"].append((outputs.is_top1.sum() / valid).item())
        return (loss, outputs) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not load_checkpoint_weights(self, resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        window = self._segment_window[mode]
        if self.accelerator.num_processes > 1:
            window = self.accelerator.reduce(window.to(self.accelerator.device), reduction="sum").cpu()
        think_sum, answer_sum, think_n, answer_n = window.tolist()
        prefix = "eval_" if mode == "eval" else ""
        if think_n or answer_n:
            logs[f"{prefix}loss_think"] = think_sum / max(think_n, 1.0)
            logs[f"{prefix}loss_answer"] = answer_sum / max(answer_n, 1.0)
        if mode == "train" and self.args.method == "scale" and "loss" in logs:
            # the weights of the step logs (not the end-of-training summary); vanilla uses none
            logs["w_think"], logs["w_answer"] = self._weights
            if self.args.progress_mode == "adaptive":
                logs["schedule_progress"] = self._progress
        self._segment_window[mode] = torch.zeros(4, dtype=torch.float64)
        super().log(logs, start_time)
