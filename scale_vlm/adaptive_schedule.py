"""The adaptive schedule progress in training: the callback that measures each optimizer step's think loss and
advances ``p`` with ``scale_vlm.schedules.advance`` (the pure update, documented there), and the trainer's access to
it.

The callback is a ``transformers`` ``ExportableState``, so the state is written as JSON into every checkpoint's
``trainer_state.json`` (in ``stateful_callbacks``, the same file and moment as ``global_step``), and restored at the
start of ``train(resume_from_checkpoint=...)``: a resumed run uses exactly the weights of the uninterrupted run.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .schedules import (
    DEFAULT_ADAPTIVE_EMA,
    DEFAULT_ADAPTIVE_FLOOR_DELAY,
    DEFAULT_ADAPTIVE_RAMP,
    DEFAULT_ADAPTIVE_TOLERANCE,
    DEFAULT_ADAPTIVE_WINDOW,
    AdaptiveParams,
    AdaptiveState,
    advance,
    training_progress,
)


def _sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    from accelerate import PartialState

    dist = PartialState()
    if dist.num_processes > 1:
        from accelerate.utils import reduce

        values = reduce(values.to(dist.device), reduction="sum").cpu()
    return values


class AdaptiveProgressCallback(TrainerCallback, ExportableState):
    """Keeps the ``AdaptiveState`` of a training run: the trainer adds each micro-batch's think NLL sum and token
    count (``record``), ``on_step_end`` all-reduces the step's totals and applies ``advance``, and the state travels
    in ``trainer_state.json`` (``state()``), restored in ``on_train_begin`` when the run resumes."""

    def __init__(self, ema: float = DEFAULT_ADAPTIVE_EMA, window: int = DEFAULT_ADAPTIVE_WINDOW,
                 tolerance: float = DEFAULT_ADAPTIVE_TOLERANCE, ramp: float = DEFAULT_ADAPTIVE_RAMP,
                 floor_delay: float = DEFAULT_ADAPTIVE_FLOOR_DELAY):
        self.params = AdaptiveParams(ema=ema, window=window, tolerance=tolerance, ramp=ramp, floor_delay=floor_delay)
        self.progress_state = AdaptiveState()
        self._pending = [0.0, 0.0]  # this process's think NLL sum and think tokens of the step being taken

    @property
    def progress(self) -> float:
        return self.progress_state.progress

    def record(self, think_sum, think_tokens) -> None:
        self._pending[0] += float(think_sum)
        self._pending[1] += float(think_tokens)

    def state(self) -> dict:
        return {"args": asdict(self.params), "attributes": {"progress_state": self.progress_state.to_dict()}}

    def on_train_begin(self, args, state, control, **kwargs):
        self._pending = [0.0, 0.0]
        if state.global_step == 0:
            # A fresh run (also a second train() on the same trainer): the schedule starts again, like the steps.
            self.progress_state = AdaptiveState()
            return
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        attributes = saved.get("attributes", {}) if isinstance(saved, dict) else {}
        if "progress_state" not in attributes:
            raise ValueError(
                f"the checkpoint at step {state.global_step} has no adaptive schedule state (trainer_state.json "
                f"stateful_callbacks.{type(self).__name__}): it was not written by a progress_mode='adaptive' run, "
                "so the weights of the resumed steps cannot be those of the uninterrupted run")
        restored = AdaptiveState.from_dict(attributes["progress_state"])
        if restored.step != state.global_step:
            raise ValueError(f"the checkpoint's adaptive schedule state is of step {restored.step}, its trainer "
                             f"state of step {state.global_step}")
        self.progress_state = restored

    def on_step_end(self, args, state, control, **kwargs):
        measured = _sum_over_processes(torch.tensor(self._pending, dtype=torch.float64))
        self._pending = [0.0, 0.0]
        think_sum, think_tokens = measured.tolist()
        self.progress_state = advance(self.progress_state, think_sum, think_tokens, state.global_step,
                                      state.max_steps, self.params)


def adaptive_callback(trainer) -> AdaptiveProgressCallback | None:
    # Looked up rather than kept: with restore_callback_states_from_checkpoint Trainer replaces the instance.
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, AdaptiveProgressCallback):
            return callback
    return None


def attach_adaptive_progress(trainer) -> None:
    """Add the callback to a SCALe run with ``progress_mode="adaptive"`` (vanilla uses no weights)."""
    params = trainer.args.adaptive_progress
    if params is not None and trainer.args.method == "scale":
        trainer.add_callback(AdaptiveProgressCallback(**asdict(params)))


def schedule_progress(trainer) -> float:
    """The schedule progress of the optimizer step being taken."""
    callback = adaptive_callback(trainer)
    if callback is not None:
        return callback.progress
    return training_progress(trainer.state.global_step, trainer.state.max_steps)


def record_think_loss(trainer, think_sum, think_tokens) -> None:
    """Add a training micro-batch's (local) think NLL sum and token count to the adaptive measurement."""
    callback = adaptive_callback(trainer)
    if callback is not None:
        callback.record(think_sum, think_tokens)
