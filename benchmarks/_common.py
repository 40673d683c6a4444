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
    """``(trainer class, loss_impl for its config)``. ``lean`` is ``ScaleSFTTrainer`` with its ``fused`` branch
    routed through ``scale_vlm.lean_loss`` (the change proposed in docs/performance.md); ``fused``/``plain`` are the
    trainer as shipped."""
    from scale_vlm.sft_trainer import ScaleSFTTrainer

    if loss_impl in ("fused", "plain"):
        return ScaleSFTTrainer, loss_impl
    if loss_impl != "lean":
        raise ValueError(f"unknown loss_impl {loss_impl!r}")
    from accelerate.utils import is_peft_model

    from scale_vlm.lean_loss import add_lean_lm_head, lean_segment_loss
    from scale_vlm.schedules import training_progress

    class LeanScaleSFTTrainer(ScaleSFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            add_lean_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.args.loss_impl != "fused":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if model.training else "eval"
            inputs = dict(inputs)
            segment_ids = inputs.pop("segment_ids")[:, 1:]
            inputs["use_cache"] = False
            counts = self._step_counts if mode == "train" and self._step_counts is not None else None
            progress = training_progress(self.state.global_step, self.state.max_steps) if mode == "train" else 1.0
            w_think, w_answer = self.args.weight_schedule(progress)
            out, outputs = lean_segment_loss(model, inputs, segment_ids, self.args.method, w_think, w_answer,
                                             self.args.normalization, counts)
            loss = out.loss
            if mode == "train" and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
            if mode == "train":
                self._weights = (w_think, w_answer)
            stats = torch.stack([out.think_sum, out.answer_sum, out.think_tokens, out.answer_tokens]).double().cpu()
            self._segment_window[mode] += stats
            valid = outputs.label_mask.sum().clamp(min=1)
            self._metrics[mode]["mean_token_accuracy"].append((outputs.is_top1.sum() / valid).item())
            return (loss, outputs) if return_outputs else loss

    import torch  # noqa: E402  (used inside compute_loss)

    return LeanScaleSFTTrainer, "fused"
