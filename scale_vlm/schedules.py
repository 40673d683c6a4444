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
        from .adaptive_schedule import AdaptiveParams

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
