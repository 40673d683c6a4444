"""``scale-vlm plot-schedule``: print a schedule's weights at a few progress points and optionally save a PNG."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from ..schedules import ScheduleFields, plot_schedule


@dataclass
class ScheduleArguments(ScheduleFields):
    out: str | None = field(default=None, metadata={"help": "Write a PNG plot here."})


def main(argv: list[str] | None = None) -> int:
    from .common import parse

    (args,) = parse(TrlParser((ScheduleArguments,), prog="scale-vlm plot-schedule"), argv)
    schedule = args.weight_schedule
    print(f"{'progress':>8}  {'w_think':>7}  {'w_answer':>8}")
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        w_t, w_a = schedule(p)
        print(f"{p:8.2f}  {w_t:7.3f}  {w_a:8.3f}")
    if args.out:
        print(f"wrote {plot_schedule(schedule, args.out)}")
    return 0
