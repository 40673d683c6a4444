"""``scale-vlm compare``: the four training recipes on identical data, seeds and evaluation, with their cost.

Arms: vanilla SFT, SCALe-SFT, vanilla SFT -> GRPO and SCALe-SFT -> GRPO. The GRPO arms start from the SFT
arms' checkpoints (reused, not retrained). Per seed, every arm sees the same training questions in the same order
and is evaluated by greedy generation on the same held-out questions with :func:`scale_vlm.eval.evaluate_model`.

Cost: the wall-clock time of each training stage (``trainer.train()`` only: no model loading, no evaluation),
input and supervised tokens for SFT, generated tokens for GRPO. An arm's training time is the sum of its stages.

Every stage (base model, each SFT, each GRPO, each evaluation) is reused on a rerun with the same config and code
(:mod:`scale_vlm.stages`). Outputs in ``output_dir``: ``results.json``, ``results.md`` and ``accuracy_vs_time.png``.

Modules: ``config`` (the config and the arms), ``pipeline`` (the stages seed by seed), ``summary`` (statistics
over seeds and the report).
"""

from .config import ARM_LABELS, ARMS, CompareConfig
from .pipeline import run_compare

__all__ = ["ARMS", "ARM_LABELS", "CompareConfig", "run_compare"]
