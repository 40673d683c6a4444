"""``scale-vlm eval --model_name_or_path PATH --dataset_name NAME_OR_PATH --output_dir DIR``: tag-aware evaluation.

Writes ``predictions.jsonl`` (one row per example) and ``metrics.json`` (accuracy, malformed rate, think/answer
lengths, per-category breakdown). Options can also come from ``--config file.yaml``. ``--model``, ``--dataset`` and
``--split`` are older spellings of ``--model_name_or_path``, ``--dataset_name`` and ``--dataset_test_split``.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from .common import run_command

    return run_command("eval", _main, argv)


def _main(argv: list[str]) -> int:
    from pathlib import Path

    from trl import TrlParser

    from ..eval.evaluate import METRICS_FILE, PREDICTIONS_FILE, EvalConfig, format_summary, run_eval
    from .common import parse

    (cfg,) = parse(TrlParser((EvalConfig,), prog="scale-vlm eval"), argv)
    metrics = run_eval(cfg)
    print(format_summary(metrics))
    print(f"wrote {Path(cfg.output_dir) / PREDICTIONS_FILE} and {Path(cfg.output_dir) / METRICS_FILE}")
    return 0
