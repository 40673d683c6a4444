"""``scale-vlm lmms-eval-path``: print the folder of the ``scale_vlm_*`` lmms-eval tasks, for ``--include_path``.

    lmms-eval --model scale_vlm --model_args pretrained=runs/scale-sft \\
        --tasks scale_vlm_scienceqa_img,scale_vlm_iconqa_val --include_path "$(scale-vlm lmms-eval-path)"
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from ..lmms_eval import TASK_NAMES, include_path

    parser = argparse.ArgumentParser(
        prog="scale-vlm lmms-eval-path",
        description=f"Print the folder to pass to lmms-eval as --include_path; it holds the tasks {', '.join(TASK_NAMES)}.",
    )
    parser.parse_args(argv)
    print(include_path())
    return 0
