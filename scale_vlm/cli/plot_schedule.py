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
    adaptive = args.adaptive_progress  # validates progress_mode and the adaptive_* fields
    if adaptive is not None:
        # The curve is the same; only where p comes from differs, and that depends on the losses of a run.
        print(f"progress_mode adaptive: the progress is loss-driven (it advances only while the think loss has "
              f"plateaued: < {adaptive.tolerance:g} relative improvement of its EMA over {adaptive.window} steps; "
              f"0 -> 1 over {adaptive.ramp:g} of the run; at least the step progress delayed by "
              f"{adaptive.floor_delay:g} of the run). A run logs it as schedule_progress.")
    print(f"{'progress':>8}  {'w_think':>7}  {'w_answer':>8}")
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        w_t, w_a = schedule(p)
        print(f"{p:8.2f}  {w_t:7.3f}  {w_a:8.3f}")
    if args.out:
        xlabel = "schedule progress (loss-driven)" if adaptive is not None else "training progress"
        print(f"wrote {plot_schedule(schedule, args.out, xlabel=xlabel)}")
    return 0
