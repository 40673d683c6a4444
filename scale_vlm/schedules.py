"""Think/answer weight schedules: pure functions of training progress ``p`` in [0, 1], looked up by name.

A schedule maps progress to an interpolation factor ``alpha`` in [0, 1]; the weights move from their start to
their end values by that factor: ``w = start + alpha * (end - start)``. With the defaults (``DEFAULT_THINK_WEIGHTS``,
``DEFAULT_ANSWER_WEIGHTS``) the think weight falls and the answer weight rises, so training starts think-heavy and
ends answer-heavy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

Interpolation = Callable[..., float]

# The defaults of every config, knob and command that exposes the schedule (SFT, demo, compare, plot-schedule).
DEFAULT_SCHEDULE = "cosine"
DEFAULT_THINK_WEIGHTS = (0.8, 0.2)  # (start, end)
DEFAULT_ANSWER_WEIGHTS = (0.2, 0.8)  # (start, end)
DEFAULT_STEP_AT = 0.5  # progress at which the "step" schedule switches

# Where the progress ``p`` comes from (see ``scale_vlm.adaptive_schedule`` for "adaptive" and its parameters).
PROGRESS_MODES = ("steps", "adaptive")
DEFAULT_PROGRESS_MODE = "steps"
DEFAULT_ADAPTIVE_EMA = 0.9  # smoothing of the step think loss: ~10 steps of memory
DEFAULT_ADAPTIVE_WINDOW = 10  # optimizer steps over which the smoothed think loss must have stopped improving
DEFAULT_ADAPTIVE_TOLERANCE = 0.01  # "plateaued": less than 1% relative improvement over the window
DEFAULT_ADAPTIVE_RAMP = 0.5  # once plateaued, p goes 0 -> 1 over this fraction of the run's steps
DEFAULT_ADAPTIVE_FLOOR_DELAY = 0.5  # the floor of p stays 0 for this fraction of the run, then rises to 1


def _cosine(p: float, **_) -> float:
    # Half-cosine ramp: flat at both ends, so early steps keep the think weight near its start value.
    return 0.5 * (1.0 - math.cos(math.pi * p))


def _linear(p: float, **_) -> float:
    return p


def _constant(p: float, **_) -> float:
    return 0.0


def _step(p: float, step_at: float = DEFAULT_STEP_AT, **_) -> float:
    return 1.0 if p >= step_at else 0.0


SCHEDULES: dict[str, Interpolation] = {"cosine": _cosine, "linear": _linear, "constant": _constant, "step": _step}


@dataclass(frozen=True)
class WeightSchedule:
    """A named schedule with start/end weights for the think and answer segments."""

    name: str = DEFAULT_SCHEDULE
    think_start: float = DEFAULT_THINK_WEIGHTS[0]
    think_end: float = DEFAULT_THINK_WEIGHTS[1]
    answer_start: float = DEFAULT_ANSWER_WEIGHTS[0]
    answer_end: float = DEFAULT_ANSWER_WEIGHTS[1]
    step_at: float = DEFAULT_STEP_AT

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose one of {sorted(SCHEDULES)}")
        for field_name in ("think_start", "think_end", "answer_start", "answer_end"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"schedule weight {field_name} must be finite and >= 0, got {value}")
        if not 0.0 <= self.step_at <= 1.0:
            raise ValueError(f"step_at must be in [0, 1], got {self.step_at}")

    def __call__(self, progress: float) -> tuple[float, float]:
        return schedule_weights(
            self.name, progress, (self.think_start, self.think_end), (self.answer_start, self.answer_end), step_at=self.step_at
        )


def schedule_weights(
    name: str,
    progress: float,
    think: tuple[float, float] = DEFAULT_THINK_WEIGHTS,
    answer: tuple[float, float] = DEFAULT_ANSWER_WEIGHTS,
    **kwargs,
) -> tuple[float, float]:
    """``(w_think, w_answer)`` at ``progress`` for schedule ``name``; progress is clamped to [0, 1]."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    p = min(1.0, max(0.0, float(progress)))
    alpha = SCHEDULES[name](p, **kwargs)
    return think[0] + alpha * (think[1] - think[0]), answer[0] + alpha * (answer[1] - answer[0])


@dataclass
class ScheduleFields:
    """The schedule options, declared once with their defaults and help: ``ScaleSFTConfig``, the demo and compare
    configs and ``scale-vlm plot-schedule`` inherit them. ``weight_schedule`` builds (and so validates) them."""

    schedule: str = field(default=DEFAULT_SCHEDULE, metadata={"help": f"Weight schedule: one of {sorted(SCHEDULES)}."})
    think_weight_start: float = field(default=DEFAULT_THINK_WEIGHTS[0],
                                      metadata={"help": "Think weight at the start of training."})
    think_weight_end: float = field(default=DEFAULT_THINK_WEIGHTS[1],
                                    metadata={"help": "Think weight at the end of training."})
    answer_weight_start: float = field(default=DEFAULT_ANSWER_WEIGHTS[0],
                                       metadata={"help": "Answer weight at the start of training."})
    answer_weight_end: float = field(default=DEFAULT_ANSWER_WEIGHTS[1],
                                     metadata={"help": "Answer weight at the end of training."})
    schedule_step_at: float = field(default=DEFAULT_STEP_AT,
                                    metadata={"help": "Progress at which the 'step' schedule switches."})
    progress_mode: str = field(
        default=DEFAULT_PROGRESS_MODE,
        metadata={"help": "Where the schedule's progress comes from: 'steps' (optimizer step / last step) or "
                  "'adaptive' (advances only while the think loss has plateaued, never behind a delayed step "
                  "progress, so the end weights are still reached at the last step; logged as schedule_progress)."},
    )
    adaptive_ema: float = field(default=DEFAULT_ADAPTIVE_EMA, metadata={
        "help": "adaptive: smoothing factor in [0, 1) of the exponential moving average of each step's think loss "
                "(0: no smoothing)."})
    adaptive_window: int = field(default=DEFAULT_ADAPTIVE_WINDOW, metadata={
        "help": "adaptive: optimizer steps over which the smoothed think loss is compared with itself."})
    adaptive_tolerance: float = field(default=DEFAULT_ADAPTIVE_TOLERANCE, metadata={
        "help": "adaptive: the think loss has plateaued when it improved by less than this fraction over the window."})
    adaptive_ramp: float = field(default=DEFAULT_ADAPTIVE_RAMP, metadata={
        "help": "adaptive: fraction of the run's steps over which the progress goes from 0 to 1 while plateaued."})
    adaptive_floor_delay: float = field(default=DEFAULT_ADAPTIVE_FLOOR_DELAY, metadata={
        "help": "adaptive: the progress is at least the step progress delayed by this fraction of the run "
                "(0 at that point, 1 at the last step), so a think loss that never plateaus still ends answer-heavy."})

    @property
    def weight_schedule(self) -> WeightSchedule:
        for name in ("think_weight_start", "think_weight_end", "answer_weight_start", "answer_weight_end"):
            value = getattr(self, name)
            if value > 1:  # a weight above 1 scales the whole loss: a learning-rate change in disguise
                raise ValueError(f"--{name} must be at most 1 (the weights mix the two segment losses; raise "
                                 f"--learning_rate to train harder), got {value}")
        return WeightSchedule(name=self.schedule, think_start=self.think_weight_start, think_end=self.think_weight_end,
                              answer_start=self.answer_weight_start, answer_end=self.answer_weight_end,
                              step_at=self.schedule_step_at)

    @property
    def adaptive_progress(self):
        """The ``AdaptiveParams`` of an adaptive run (validated), ``None`` when the progress follows the steps."""
        if self.progress_mode not in PROGRESS_MODES:
            raise ValueError(f"progress_mode must be one of {PROGRESS_MODES}, got {self.progress_mode!r}")
        params = AdaptiveParams(ema=self.adaptive_ema, window=self.adaptive_window, tolerance=self.adaptive_tolerance,
                                ramp=self.adaptive_ramp, floor_delay=self.adaptive_floor_delay)
        return params if self.progress_mode == "adaptive" else None


def training_progress(global_step: int, max_steps: int) -> float:
    """Progress of the optimizer step being taken: 0 at the first step, 1 at the last.

    A pure function of the step counters, so a resumed run (whose ``global_step`` is restored from its checkpoint)
    sees exactly the weights the uninterrupted run would have.
    """
    if max_steps <= 1:
        return 1.0 if max_steps == 1 and global_step >= 1 else 0.0
    return min(1.0, global_step / (max_steps - 1))


# ---------------------------------------------------------------------------------------------------------------
# Adaptive progress (``progress_mode="adaptive"``): the pure update; the callback that drives it during training is
# ``scale_vlm.adaptive_schedule.AdaptiveProgressCallback``.
# Adaptive schedule progress (``progress_mode="adaptive"``): ``p`` follows the measured think loss, not the step count.
#
# The weight curve is still the named schedule (cosine, linear, ...); only its progress ``p`` changes. With
# ``progress_mode="steps"`` (the default) ``p`` is ``training_progress(global_step, max_steps)``. In adaptive mode the
# think weight is kept at its start value until the think loss has stopped improving, and only then does ``p`` move:
#
# - Measurement, once per optimizer step: the step's think loss ``m = think NLL sum / think tokens`` over all its
#   micro-batches and all processes (the token mean that is logged as ``loss_think`` with ``logging_steps=1``; the
#   same for both normalisations). Every process gets the same value from one all-reduce, so every process computes
#   the same ``p``; gradient accumulation does not change it (micro-batches are summed before the update).
# - Smoothing: ``ema = adaptive_ema * ema + (1 - adaptive_ema) * m`` (the first measurement starts it).
# - Plateau: the smoothed loss improved by less than ``adaptive_tolerance`` (relative) over the last
#   ``adaptive_window`` steps: ``(ema[-window] - ema) / |ema[-window]| < tolerance``. A rising loss counts as
#   plateaued; before ``window`` steps have been measured nothing is decided (not plateaued).
# - Advance: each plateaued step adds ``1 / (adaptive_ramp * (max_steps - 1))`` to ``p``, so a loss that stays flat
#   takes ``p`` from 0 to 1 over ``adaptive_ramp`` of the run. A think loss that improves again stops ``p`` where it
#   is (``p`` never goes back: weights do not oscillate with the loss noise).
# - Floor: ``p`` is at least the step progress delayed by ``adaptive_floor_delay``:
#   ``clamp((training_progress - delay) / (1 - delay), 0, 1)``, which is 1 at the last step. A think loss that never
#   plateaus therefore still ends answer-heavy, with the whole move squeezed into the last ``1 - delay`` of the run.
#
# ``p`` is non-decreasing, in [0, 1], and 1 at the last step. A step without think tokens (or a non-finite loss)
# gives no measurement: the smoothed loss and its window are left as they were.
#
# The state (``AdaptiveState``: smoothed loss, its window, ``p``) is updated by the pure function ``advance`` from
# ``AdaptiveProgressCallback.on_step_end``, after the optimizer step and before the step is logged or checkpointed.
# The callback is a ``transformers`` ``ExportableState``, so the state is written as JSON into every checkpoint's
# ``trainer_state.json`` (in ``stateful_callbacks``, the same file and moment as ``global_step``), and restored at the
# start of ``train(resume_from_checkpoint=...)``: a resumed run uses exactly the weights of the uninterrupted run.


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



def plot_schedule(schedule: WeightSchedule, path: str, points: int = 101, xlabel: str = "training progress") -> str:
    """Write a PNG of ``w_think`` and ``w_answer`` over progress; returns the path."""
    from .report import pyplot, save_figure

    xs = [i / (points - 1) for i in range(points)]
    ws = [schedule(x) for x in xs]
    fig, ax = pyplot().subplots(figsize=(5, 3))
    ax.plot(xs, [w[0] for w in ws], label="w_think")
    ax.plot(xs, [w[1] for w in ws], label="w_answer")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weight")
    ax.set_title(f"{schedule.name} schedule")
    ax.legend()
    save_figure(fig, path, dpi=100)
    return path
