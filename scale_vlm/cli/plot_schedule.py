"""``scale-vlm plot-schedule``: print a schedule's weights at a few progress points and optionally save a PNG."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from ..schedules import (
    DEFAULT_ANSWER_WEIGHTS,
    DEFAULT_SCHEDULE,
    DEFAULT_STEP_AT,
    DEFAULT_THINK_WEIGHTS,
    WeightSchedule,
    plot_schedule,
)


@dataclass
class ScheduleArguments:
    schedule: str = field(default=DEFAULT_SCHEDULE, metadata={"help": "cosine | linear | constant | step"})
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
    out: str | None = field(default=None, metadata={"help": "Write a PNG plot here."})


def main(argv: list[str] | None = None) -> int:
    from .common import parse

    (args,) = parse(TrlParser((ScheduleArguments,), prog="scale-vlm plot-schedule"), argv)
    schedule = WeightSchedule(args.schedule, args.think_weight_start, args.think_weight_end,
                              args.answer_weight_start, args.answer_weight_end, args.schedule_step_at)
    print(f"{'progress':>8}  {'w_think':>7}  {'w_answer':>8}")
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        w_t, w_a = schedule(p)
        print(f"{p:8.2f}  {w_t:7.3f}  {w_a:8.3f}")
    if args.out:
        print(f"wrote {plot_schedule(schedule, args.out)}")
    return 0
