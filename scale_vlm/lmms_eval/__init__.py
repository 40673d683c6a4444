"""lmms-eval tasks that score with scale-vlm's own prompt, parser and scorer (tag-aware ScienceQA and IconQA).

lmms-eval (``pip install scale-vlm[lmms-eval]``) finds them through ``--include_path``; ``scale-vlm lmms-eval-path``
prints the folder::

    lmms-eval --model qwen2_5_vl --model_args pretrained=runs/scale-sft \\
        --tasks scale_vlm_scienceqa_img,scale_vlm_iconqa_val --include_path "$(scale-vlm lmms-eval-path)"

Nothing here imports lmms-eval: the task functions live in ``tasks/utils.py``, which lmms-eval loads beside the
YAML files.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_NAMES = ("scale_vlm_scienceqa_img", "scale_vlm_iconqa_val", "scale_vlm_iconqa_test")


def include_path() -> str:
    """The folder to hand lmms-eval as ``--include_path`` (or ``TaskManager(include_path=...)``)."""
    return str(TASKS_DIR)


def model_manifest():
    """The ``lmms_eval.models`` entry point: ``--model scale_vlm`` is :class:`scale_vlm.lmms_eval.model.ScaleVLM`.
    Called by lmms-eval while it builds its model registry, so lmms-eval is importable here."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="scale_vlm", simple_class_path="scale_vlm.lmms_eval.model.ScaleVLM")
