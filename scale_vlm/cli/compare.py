"""``scale-vlm compare [--config x.yaml] [--quick] [--seeds 0 1 2] --output_dir DIR``: the four-arm comparison.

Vanilla SFT, SCALe-SFT, vanilla SFT -> GRPO and SCALe-SFT -> GRPO on identical data, seeds and evaluation; writes
``results.json``, ``results.md`` and ``accuracy_vs_time.png``. Finished stages are reused on a rerun with the same
config, so an interrupted comparison picks up where it stopped.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..compare import CompareConfig, run_compare

    parser = TrlParser((CompareConfig,), prog="scale-vlm compare")
    try:
        (cfg,) = parser.parse_args_and_config(argv)
        run_compare(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"scale-vlm compare: error: {err}", file=sys.stderr)
        return 2
    return 0
