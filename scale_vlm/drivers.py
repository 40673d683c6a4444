"""The one place that builds, runs, times and saves the training and evaluation runs of the demo, the comparison,
the scripts and the benchmarks.

- :func:`sft_args`: the SFT recipe the demo and the comparison share (cosine decay, 5 percent warm-up, AdamW with
  beta2 0.98, weight decay 0.01, gradient clipping at 1, about 30 log lines per run);
- :func:`build_sft_trainer`: the one SFT trainer (a :class:`CountingSFTTrainer`) for any ``ScaleSFTConfig``, built by
  ``scale-vlm sft`` as by the demo;
- :func:`timed_train`: ``trainer.train()`` timed alone (``scale-vlm sft`` resumes through it); with ``carried``
  counts, every checkpoint keeps the seconds and counts so far, so that a run resumed from it reports the whole run's;
- :func:`train_sft` / :func:`train_grpo`: one run from a fresh copy of the model in a folder;
- :func:`evaluate`: greedy generation and scoring of a model on held-out questions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from .segments import DEFAULT_TAGS
from .sft_config import ScaleSFTConfig
from .sft_trainer import ScaleSFTTrainer
from .tiny.shipped import load_base


class CountingSFTTrainer(ScaleSFTTrainer):
    """Counts input tokens (real, not padding) and supervised tokens of every optimizer step: the SFT cost measure.
    The counts add up on the batch's device and are read as ints only when asked for (no GPU sync per step)."""

    _input_count = 0
    _supervised_count = 0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, n = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batch_samples:
            # packed rows (padding_free) carry no attention mask: their real tokens are those of an example
            real = batch["attention_mask"] if "attention_mask" in batch else batch["example_ids"] >= 0
            self._input_count = self._input_count + real.sum()
            if "labels" in batch:
                self._supervised_count = self._supervised_count + (batch["labels"][:, 1:] != -100).sum()
        return batch_samples, n

    @property
    def input_tokens(self) -> int:
        return int(self._input_count)

    @property
    def supervised_tokens(self) -> int:
        return int(self._supervised_count)


def sft_args(output_dir: str | Path, method: str, schedule: dict, *, steps: int, batch_size: int,
             learning_rate: float, seed: int, progress: bool, **overrides) -> ScaleSFTConfig:
    """The demo's and the comparison's SFT recipe; ``schedule`` is ``ScheduleKnobs.schedule_kwargs()``,
    ``overrides`` any ``ScaleSFTConfig`` field, a recipe one included (the benchmarks fix e.g. ``logging_steps``)."""
    return ScaleSFTConfig(**{**dict(
        output_dir=str(output_dir), method=method, **schedule,
        max_steps=steps, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01,
        adam_beta2=0.98, max_grad_norm=1.0, seed=seed, data_seed=seed, logging_steps=max(1, steps // 30),
        save_strategy="no", report_to="none", disable_tqdm=not progress, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), overwrite_output_dir=True), **overrides})


def checkpoint_args(save_steps: int) -> dict:
    """The training arguments of a checkpoint every ``save_steps`` steps, the newest kept (model, optimizer,
    scheduler, RNG and data order: what an exact resume needs); 0: none."""
    if not save_steps:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 1}


def build_sft_trainer(model, processor, args: ScaleSFTConfig, train_dataset, *, eval_dataset=None, peft_config=None,
                      callbacks=None) -> CountingSFTTrainer:
    """The one SFT trainer every job builds: ``scale-vlm sft``, the demo, the comparison, the scripts, the
    benchmarks."""
    return CountingSFTTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                              processing_class=processor, peft_config=peft_config, callbacks=callbacks)


def prepare_sft_rows(train_dataset, model_dir: str | Path):
    """Render and segment training data once with the model's processor, so that several runs train on exactly
    the same rows without each preparing them again."""
    from .data.prepare import prepare_dataset
    from .processors import load_processor

    prepared, _ = prepare_dataset(train_dataset, load_processor(str(model_dir)), tags=DEFAULT_TAGS)
    return prepared


@dataclass
class Run:
    """A finished training run: its trainer, processor and the wall-clock seconds of ``trainer.train()``."""

    trainer: object
    processor: object
    seconds: float

    @property
    def model(self):
        return self.trainer.model

    @property
    def log_history(self) -> list[dict]:
        return list(self.trainer.state.log_history)

    def save(self, folder: str | Path) -> Path:
        """The trained model and its processor, loadable with ``load_model`` (and by ``scale-vlm eval`` / ``grpo``)."""
        self.trainer.model.save_pretrained(folder, safe_serialization=True)
        self.processor.save_pretrained(folder)
        return Path(folder)


PROGRESS_FILE = "run_progress.json"


class CarriedProgress(TrainerCallback):
    """Keeps in every checkpoint what a run resumed from it starts from: the training seconds so far and the
    trainer's running counts named by ``carried``. Those counts grow with the batches this process sees, and a
    resumed run skips the batches before its checkpoint; the steps redone after a crash count once."""

    def __init__(self, trainer, carried: Sequence[str], prior_seconds: float):
        self.trainer, self.carried = trainer, tuple(carried)
        self.t0, self.prior_seconds = time.perf_counter(), prior_seconds

    def seconds(self) -> float:
        return self.prior_seconds + time.perf_counter() - self.t0

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            progress = {"seconds": self.seconds(), **{name: int(getattr(self.trainer, name)) for name in self.carried}}
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / PROGRESS_FILE).write_text(json.dumps(progress) + "\n")


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder in ``output_dir`` that holds :data:`PROGRESS_FILE` (None: none). That
    file is written last, so a checkpoint cut off while being written is passed over."""
    from .run_guard import checkpoints_newest_first

    return next((path for path in checkpoints_newest_first(output_dir) if (Path(path) / PROGRESS_FILE).is_file()),
                None)


def timed_train(trainer, processor, resume_from_checkpoint: str | None = None, carried: Sequence[str] = ()) -> Run:
    """``trainer.train()`` (from ``resume_from_checkpoint`` when given), timed alone. With ``carried`` (names of the
    trainer's running int counts), the seconds and those counts also continue from the checkpoint's
    :data:`PROGRESS_FILE`, and every checkpoint written keeps them, so ``Run.seconds`` and the counts are the whole
    run's however often it was resumed (a checkpoint without that file is refused: its counts are unknown)."""
    prior: dict = {}
    if carried and resume_from_checkpoint:
        path = Path(resume_from_checkpoint) / PROGRESS_FILE
        if not path.is_file():
            raise ValueError(f"{resume_from_checkpoint} has no {PROGRESS_FILE}: the seconds and counts of the "
                             "steps before it are unknown; remove the checkpoint to train from step 0")
        prior = json.loads(path.read_text())
        for name in carried:
            setattr(trainer, name, int(prior[name]))
    progress = CarriedProgress(trainer, carried, prior.get("seconds", 0.0)) if carried else None
    if progress is not None:
        trainer.add_callback(progress)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = progress.seconds() if progress is not None else time.perf_counter() - t0
    return Run(trainer, processor, seconds)


def train_sft(model_dir: str | Path, args: ScaleSFTConfig, train_dataset, callbacks=None,
              resume: bool = False) -> Run:
    """One SFT run from a fresh copy of the model in ``model_dir``; with ``resume``, from the last checkpoint in
    ``args.output_dir`` where there is one (its seconds and token counts carried on)."""
    model, processor = load_base(model_dir)
    trainer = build_sft_trainer(model, processor, args, train_dataset, callbacks=callbacks)
    return timed_train(trainer, processor, last_checkpoint(args.output_dir) if resume else None,
                       carried=("_input_count", "_supervised_count"))


def train_grpo(model_dir: str | Path, args, prompts_dataset, callbacks=None, resume: bool = False) -> Run:
    """One GRPO run (``args``: a ``ScaleGRPOConfig``) from the model in ``model_dir``; with ``resume``, from the last
    checkpoint in ``args.output_dir`` where there is one (its seconds and generated tokens carried on)."""
    from .grpo_trainer import ScaleGRPOTrainer

    model, processor = load_base(model_dir)
    trainer = ScaleGRPOTrainer(model=model, args=args, train_dataset=prompts_dataset, processing_class=processor,
                               callbacks=callbacks)
    return timed_train(trainer, processor, last_checkpoint(args.output_dir) if resume else None,
                       carried=("generated_tokens",))


def evaluate(model, processor, examples, *, batch_size: int, max_new_tokens: int, progress: bool):
    """Greedy generation on ``examples``, parsed and scored: ``(metrics, prediction rows)``."""
    from .eval.evaluate import evaluate_model

    model.eval()
    return evaluate_model(model, processor, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          tags=DEFAULT_TAGS, progress=progress)
