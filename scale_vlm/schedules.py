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

    @property
    def weight_schedule(self) -> WeightSchedule:
        return WeightSchedule(name=self.schedule, think_start=self.think_weight_start, think_end=self.think_weight_end,
                              answer_start=self.answer_weight_start, answer_end=self.answer_weight_end,
                              step_at=self.schedule_step_at)


def training_progress(global_step: int, max_steps: int) -> float:
    """Progress of the optimizer step being taken: 0 at the first step, 1 at the last.

    A pure function of the step counters, so a resumed run (whose ``global_step`` is restored from its checkpoint)
    sees exactly the weights the uninterrupted run would have.
    """
    if max_steps <= 1:
        return 1.0 if max_steps == 1 and global_step >= 1 else 0.0
    return min(1.0, global_step / (max_steps - 1))


def plot_schedule(schedule: WeightSchedule, path: str, points: int = 101) -> str:
    """Write a PNG of ``w_think`` and ``w_answer`` over progress; returns the path."""
    from .report import pyplot, save_figure

    xs = [i / (points - 1) for i in range(points)]
    ws = [schedule(x) for x in xs]
    fig, ax = pyplot().subplots(figsize=(5, 3))
    ax.plot(xs, [w[0] for w in ws], label="w_think")
    ax.plot(xs, [w[1] for w in ws], label="w_answer")
    ax.set_xlabel("training progress")
    ax.set_ylabel("weight")
    ax.set_title(f"{schedule.name} schedule")
    ax.legend()
    save_figure(fig, path, dpi=100)
    return path
