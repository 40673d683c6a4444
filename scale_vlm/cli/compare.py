"""``scale-vlm compare [--config x.yaml] [--quick] [--seeds 0 1 2] --output_dir DIR``: the four-arm comparison.

Vanilla SFT, SCALe-SFT, vanilla SFT -> GRPO and SCALe-SFT -> GRPO on identical data, seeds and evaluation; writes
``results.json``, ``results.md`` and ``accuracy_vs_time.png``. Finished stages are reused on a rerun with the same
config, so an interrupted comparison picks up where it stopped. ``--dataset_name`` runs the arms on your data
(train and test splits, read as ``scale-vlm sft`` and ``eval`` read them; ``--adapter`` and the column options as
in ``eval``) instead of the built-in benchmark.
"""

from __future__ import annotations

import functools
from pathlib import Path


def main(argv: list[str]) -> int:
    from .common import run_command

    return run_command("compare", _main, argv)


def _main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..compare import CompareConfig, run_compare
    from ..compare.config import RESULT_FILES
    from ..log_output import pipeline_logging
    from .common import parse

    (cfg,) = parse(TrlParser((CompareConfig,), prog="scale-vlm compare"), argv)
    progress = {"scale_vlm.compare": "\n== %(message)s ==", "scale_vlm.stages": "%(message)s"}
    # the GRPO trainer's warning when completions run out of their budget: --quick's budgets are short on purpose
    pipeline_logging(progress, quiet=("scale_vlm.grpo_trainer",) if cfg.quick else ())
    results = run_compare(cfg, say=functools.partial(print, flush=True))
    print("\n" + results["markdown"])
    print(f"wrote {', '.join(str(Path(cfg.output_dir) / name) for name in RESULT_FILES)}")
    return 0
