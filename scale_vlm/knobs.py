"""Option groups shared by the demo and the comparison configs (one definition, one help text each)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, field, fields

from .bench.dataset import BenchConfig
from .schedules import ScheduleFields


def _bench_knob(name: str, help: str):
    """A demo/compare option whose default is ``BenchConfig``'s, so each benchmark default lives in one place."""
    return field(default=getattr(BenchConfig, name), metadata={"help": f"benchmark knob: {help}"})


@dataclass
class BenchKnobs:
    """Knobs of the built-in benchmark that the demo and the comparison expose (see ``BenchConfig``)."""

    trace_verbosity: int = _bench_knob("trace_verbosity", "trace length (0, 1, 2)")
    trace_repeat: int = _bench_knob("trace_repeat", "extra passes of scan + task steps in each trace (0-8)")
    trace_entropy: int = _bench_knob(
        "trace_entropy", "trace wording: 0 templated, 1 paraphrased + an observation or self-check, 2 + more "
                         "observations, self-checks and hedges (scenes and answers unchanged)")
    trace_style: str = _bench_knob(
        "trace_style", "task steps object by object (walkthrough) or cells named at once (lookup)")
    scan_order: str = _bench_knob(
        "scan_order", "each scanned object as 'top left red circle' (cell_first) or 'red circle at top left' "
                      "(object_first)")
    teacher_error_rate: float = _bench_knob("teacher_error_rate", "traces with a wrong detail")
    option_letter_fraction: float = _bench_knob("option_letter_fraction", "option-letter answers")
    task_mix: str = _bench_knob("task_mix", "family:weight, comma separated")
    max_objects: int = _bench_knob("max_objects", "most objects per scene (2-9)")

    def bench(self, seed: int, split: str, n: int) -> BenchConfig:
        return BenchConfig(seed=seed, num_examples=n, split=split, **{k: getattr(self, k) for k in BENCH_KNOBS})


# the benchmark knob names: what a stage's cache hash depends on among the data settings
BENCH_KNOBS = tuple(f.name for f in fields(BenchKnobs))


@dataclass
class ScheduleKnobs(ScheduleFields):
    """SCALe's schedule, with ``ScaleSFTConfig``'s names, defaults and help (one declaration: ``ScheduleFields``)."""

    def schedule_kwargs(self) -> dict:
        """The fields as ``ScaleSFTConfig`` keyword arguments."""
        return {k: getattr(self, k) for k in SCHEDULE_KNOBS}


# the schedule knob names (``ScaleSFTConfig``'s), in declaration order: what the SFT stage's cache hash depends on
SCHEDULE_KNOBS = tuple(f.name for f in fields(ScheduleKnobs))


# The options a command line (or its --config file) gave, while it builds its config: a value equal to the default
# is then still the user's, which the dataclass alone cannot tell from an option left unset.
_GIVEN_OPTIONS: ContextVar[Collection[str]] = ContextVar("given_options", default=frozenset())


@contextmanager
def options_given(names: Collection[str]) -> Iterator[None]:
    """While configs are built inside, ``--quick`` leaves the options ``names`` alone (``scale_vlm.cli.common``).
    ``names`` is read when a config is built, so a set the parser fills while it reads a --config file counts."""
    token = _GIVEN_OPTIONS.set(names)
    try:
        yield
    finally:
        _GIVEN_OPTIONS.reset(token)


def was_given(name: str) -> bool:
    """Whether the command line being parsed (or its --config file) gave the option ``name``."""
    return name in _GIVEN_OPTIONS.get()


def apply_quick(config, values: dict) -> dict:
    """``--quick``: set each option of ``values`` that the user did not give (on the command line or in its config
    file, see :func:`options_given`) and that still holds its dataclass default (in Python: a value equal to the
    default reads as left alone); returns ``{option: value}`` of what it set."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(config)
                if f.default is not MISSING or f.default_factory is not MISSING}
    unknown = [name for name in values if name not in defaults]
    if unknown:
        raise ValueError(f"quick values name {', '.join(unknown)}: not options of {type(config).__name__}")
    done = {}
    for name, value in values.items():
        if not was_given(name) and getattr(config, name) == defaults[name] and value != defaults[name]:
            setattr(config, name, value)
            done[name] = value
    return done


def quick_message(settings: dict) -> str:
    """The line the demo and the comparison print about what ``--quick`` set."""
    return ("--quick set " + ", ".join(f"--{k} {v}" for k, v in settings.items())
            + " (options you give yourself are kept)")
