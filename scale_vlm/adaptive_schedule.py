"""Adaptive schedule progress (``progress_mode="adaptive"``): ``p`` follows the measured think loss, not the step count.

The weight curve is still the named schedule (cosine, linear, ...); only its progress ``p`` changes. With
``progress_mode="steps"`` (the default) ``p`` is ``training_progress(global_step, max_steps)``. In adaptive mode the
think weight is kept at its start value until the think loss has stopped improving, and only then does ``p`` move:

- Measurement, once per optimizer step: the step's think loss ``m = think NLL sum / think tokens`` over all its
  micro-batches and all processes (the token mean that is logged as ``loss_think`` with ``logging_steps=1``; the
  same for both normalisations). Every process gets the same value from one all-reduce, so every process computes
  the same ``p``; gradient accumulation does not change it (micro-batches are summed before the update).
- Smoothing: ``ema = adaptive_ema * ema + (1 - adaptive_ema) * m`` (the first measurement starts it).
- Plateau: the smoothed loss improved by less than ``adaptive_tolerance`` (relative) over the last
  ``adaptive_window`` steps: ``(ema[-window] - ema) / |ema[-window]| < tolerance``. A rising loss counts as
  plateaued; before ``window`` steps have been measured nothing is decided (not plateaued).
- Advance: each plateaued step adds ``1 / (adaptive_ramp * (max_steps - 1))`` to ``p``, so a loss that stays flat
  takes ``p`` from 0 to 1 over ``adaptive_ramp`` of the run. A think loss that improves again stops ``p`` where it
  is (``p`` never goes back: weights do not oscillate with the loss noise).
- Floor: ``p`` is at least the step progress delayed by ``adaptive_floor_delay``:
  ``clamp((training_progress - delay) / (1 - delay), 0, 1)``, which is 1 at the last step. A think loss that never
  plateaus therefore still ends answer-heavy, with the whole move squeezed into the last ``1 - delay`` of the run.

``p`` is non-decreasing, in [0, 1], and 1 at the last step. A step without think tokens (or a non-finite loss)
gives no measurement: the smoothed loss and its window are left as they were.

The state (``AdaptiveState``: smoothed loss, its window, ``p``) is updated by the pure function ``advance`` from
``AdaptiveProgressCallback.on_step_end``, after the optimizer step and before the step is logged or checkpointed.
The callback is a ``transformers`` ``ExportableState``, so the state is written as JSON into every checkpoint's
``trainer_state.json`` (in ``stateful_callbacks``, the same file and moment as ``global_step``), and restored at the
start of ``train(resume_from_checkpoint=...)``: a resumed run uses exactly the weights of the uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .schedules import (
    DEFAULT_ADAPTIVE_EMA,
    DEFAULT_ADAPTIVE_FLOOR_DELAY,
    DEFAULT_ADAPTIVE_RAMP,
    DEFAULT_ADAPTIVE_TOLERANCE,
    DEFAULT_ADAPTIVE_WINDOW,
    training_progress,
)


@dataclass(frozen=True)
class AdaptiveParams:
    """The adaptive progress settings (``ScheduleFields.adaptive_*``); see the module docstring."""

    ema: float = DEFAULT_ADAPTIVE_EMA
    window: int = DEFAULT_ADAPTIVE_WINDOW
    tolerance: float = DEFAULT_ADAPTIVE_TOLERANCE
    ramp: float = DEFAULT_ADAPTIVE_RAMP
    floor_delay: float = DEFAULT_ADAPTIVE_FLOOR_DELAY

    def __post_init__(self):
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"adaptive_ema must be in [0, 1), got {self.ema}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"adaptive_window must be an integer >= 1, got {self.window!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"adaptive_tolerance must be finite and >= 0, got {self.tolerance}")
        if not 0.0 <= self.ramp <= 1.0:
            raise ValueError(f"adaptive_ramp must be in [0, 1], got {self.ramp}")
        if not 0.0 <= self.floor_delay < 1.0:
            raise ValueError(f"adaptive_floor_delay must be in [0, 1), got {self.floor_delay}")


@dataclass(frozen=True)
class AdaptiveState:
    """What the adaptive progress remembers between optimizer steps (JSON-safe via ``to_dict``/``from_dict``).

    ``step``: optimizer steps folded in (equals ``global_step`` after the update, checked on resume);
    ``progress``: the ``p`` of the next optimizer step; ``ema``: the smoothed think loss (``None`` before the first
    measurement); ``history``: the last ``window + 1`` smoothed values, oldest first; ``plateaued_steps``: steps
    that found a plateau (diagnostics).
    """

    step: int = 0
    progress: float = 0.0
    ema: float | None = None
    history: tuple[float, ...] = ()
    plateaued_steps: int = 0

    def to_dict(self) -> dict:
        return {"step": self.step, "progress": self.progress, "ema": self.ema, "history": list(self.history),
                "plateaued_steps": self.plateaued_steps}

    @classmethod
    def from_dict(cls, d: dict) -> "AdaptiveState":
        ema = d.get("ema")
        return cls(step=int(d["step"]), progress=float(d["progress"]), ema=None if ema is None else float(ema),
                   history=tuple(float(v) for v in d.get("history", ())),
                   plateaued_steps=int(d.get("plateaued_steps", 0)))


def floor_progress(step: int, max_steps: int, delay: float) -> float:
    """The least ``p`` of optimizer step ``step`` (0-based): the step progress delayed by ``delay`` of the run,
    0 until then and 1 at the last step."""
    return min(1.0, max(0.0, (training_progress(step, max_steps) - delay) / (1.0 - delay)))


def is_plateau(history: tuple[float, ...], window: int, tolerance: float) -> bool:
    """Whether the smoothed think loss improved by less than ``tolerance`` (relative) over the last ``window``
    steps; ``False`` while fewer than ``window + 1`` values are known."""
    if len(history) <= window:
        return False
    before, now = history[-window - 1], history[-1]
    if before == 0.0:
        return True  # a zero loss cannot improve
    return (before - now) / abs(before) < tolerance


def advance(state: AdaptiveState, think_sum: float, think_tokens: float, step: int, max_steps: int,
            params: AdaptiveParams) -> AdaptiveState:
    """The state after optimizer step ``step`` (1-based: the ``global_step`` once the step is taken) of
    ``max_steps``, given that step's global think NLL sum and think token count. Pure: the same arguments always
    give the same state, on every process and in a resumed run."""
    ema, history = state.ema, state.history
    if think_tokens > 0 and math.isfinite(think_sum):
        loss = think_sum / think_tokens
        ema = loss if ema is None else params.ema * ema + (1.0 - params.ema) * loss
        history = (history + (ema,))[-(params.window + 1):]
    plateaued = is_plateau(history, params.window, params.tolerance)
    rate = 1.0 / max(1.0, params.ramp * (max_steps - 1))
    progress = state.progress + rate if plateaued else state.progress
    # ``step`` is also the 0-based index of the next step, whose progress this is.
    progress = min(1.0, max(progress, floor_progress(step, max_steps, params.floor_delay)))
    return AdaptiveState(step=step, progress=progress, ema=ema, history=history,
                         plateaued_steps=state.plateaued_steps + int(plateaued))


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
