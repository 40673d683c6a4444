"""``scale-vlm eval --model PATH --dataset NAME_OR_PATH --output_dir DIR``: tag-aware evaluation.

Writes ``predictions.jsonl`` (one row per example) and ``metrics.json`` (accuracy, malformed rate, think/answer
lengths, per-category breakdown). Options can also come from ``--config file.yaml``.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..eval.evaluate import EvalConfig, run_eval

    parser = TrlParser((EvalConfig,), prog="scale-vlm eval")
    try:
        (cfg,) = parser.parse_args_and_config(argv)
        run_eval(cfg)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"scale-vlm eval: error: {err}", file=sys.stderr)
        return 2
    return 0
