"""``scale-vlm demo``: vanilla SFT vs SCALe-SFT on the built-in benchmark with the tiny base VLM, on a CPU."""

from __future__ import annotations

import functools

from trl import TrlParser

from ..demo import DemoConfig, run_demo


def main(argv: list[str]) -> int:
    from .common import run_command

    return run_command("demo", _main, argv)


def _main(argv: list[str]) -> int:
    from ..log_output import pipeline_logging
    from .common import parse

    (cfg,) = parse(TrlParser((DemoConfig,), prog="scale-vlm demo"), argv)
    pipeline_logging()  # the training workers take this level over
    run_demo(cfg, say=functools.partial(print, flush=True))
    return 0
