"""Option groups shared by the demo and the comparison configs (one definition, one help text each)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class BenchKnobs:
    """Knobs of the built-in benchmark that the demo and the comparison expose (see ``BenchConfig``)."""

    trace_verbosity: int = field(default=1, metadata={"help": "benchmark knob: trace length (0, 1, 2)"})
    trace_style: str = field(default="lookup", metadata={
        "help": "benchmark knob: task steps object by object (walkthrough) or cells named at once (lookup)"})
    scan_order: str = field(default="cell_first", metadata={
        "help": "benchmark knob: each scanned object as 'top left red circle' (cell_first) or 'red circle at top left' "
                "(object_first)"})
    teacher_error_rate: float = field(default=0.2, metadata={"help": "benchmark knob: traces with a wrong detail"})
    option_letter_fraction: float = field(default=0.8, metadata={"help": "benchmark knob: option-letter answers"})
    task_mix: str = field(default="count:1,attribute:1,spatial:1,compare:1", metadata={"help": "benchmark knob"})
    max_objects: int = field(default=4, metadata={"help": "benchmark knob: most objects per scene (2-9)"})

    def bench(self, seed: int, split: str, n: int):
        from .bench.dataset import BenchConfig

        return BenchConfig(seed=seed, num_examples=n, split=split, **{k: getattr(self, k) for k in BENCH_KNOBS})


# the benchmark knob names: what a stage's cache hash depends on among the data settings
BENCH_KNOBS = tuple(f.name for f in fields(BenchKnobs))


@dataclass
class ScheduleKnobs:
    """SCALe's schedule, with ``ScaleSFTConfig``'s names and defaults."""

    schedule: str = field(default="cosine", metadata={"help": "SCALe schedule shape"})
    think_weight_start: float = field(default=0.8, metadata={"help": "SCALe schedule: think weight at the start"})
    think_weight_end: float = field(default=0.2, metadata={"help": "SCALe schedule: think weight at the end"})
    answer_weight_start: float = field(default=0.2, metadata={"help": "SCALe schedule: answer weight at the start"})
    answer_weight_end: float = field(default=0.8, metadata={"help": "SCALe schedule: answer weight at the end"})

    def schedule_kwargs(self) -> dict:
        """The fields as ``ScaleSFTConfig`` keyword arguments."""
        return {k: getattr(self, k) for k in ("schedule", "think_weight_start", "think_weight_end",
                                              "answer_weight_start", "answer_weight_end")}
