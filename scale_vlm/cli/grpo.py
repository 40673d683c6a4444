"""``scale-vlm grpo --model_name_or_path SFT_CHECKPOINT --dataset builtin|scienceqa|PATH --output_dir DIR``.

GRPO (TRL's ``GRPOTrainer``) from an SFT checkpoint with the accuracy and format rewards. Every ``GRPOConfig``
flag works (``--loss_type``, ``--beta``, ``--num_generations``, ``--max_completion_length``, ``--learning_rate``,
``--use_vllm`` when vLLM is installed, ...), plus ``--accuracy_weight`` / ``--format_weight`` and the tag names.
Options can also come from ``--config file.yaml``. Per-step metrics land in ``DIR/log_history.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GRPOScriptArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "SFT checkpoint folder (or hub name)"})
    dataset: str = field(default="builtin", metadata={"help": "builtin, scienceqa, iconqa or a local dataset path"})
    dataset_split: str = field(default="train", metadata={"help": "split to draw GRPO prompts from"})
    adapter: str = field(default="auto", metadata={"help": "dataset schema (as in scale-vlm eval)"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts"})
    builtin_size: int = field(default=512, metadata={"help": "--dataset builtin: prompts to generate"})
    builtin_seed: int = field(default=0, metadata={"help": "--dataset builtin: generation seed"})
    image_only: bool = field(default=False, metadata={"help": "keep only prompts with an image"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})


def run(script: GRPOScriptArguments, args) -> dict:
    import torch

    from ..grpo_trainer import ScaleGRPOTrainer, load_grpo_dataset
    from ..processors import load_processor

    if not script.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ValueError("--use_vllm needs vLLM: pip install 'scale-vlm[vllm]'")
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(f"{out} is not empty; pass --overwrite_output_dir to write into it")
    if script.threads:
        torch.set_num_threads(script.threads)
    dataset = load_grpo_dataset(script.dataset, script.dataset_split, limit=script.limit, seed=script.builtin_seed,
                                builtin_size=script.builtin_size, image_only=script.image_only, tags=args.tags,
                                adapter=script.adapter)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(script.model_name_or_path,
                                                        trust_remote_code=args.trust_remote_code)
    if torch.cuda.is_available() is False or args.use_cpu:
        model = model.to(torch.float32)
    processor = load_processor(script.model_name_or_path, trust_remote_code=args.trust_remote_code)
    trainer = ScaleGRPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    trainer.save_model(args.output_dir)
    processor.save_pretrained(args.output_dir)
    history = trainer.state.log_history
    (out / "log_history.json").write_text(json.dumps(history, indent=1) + "\n")
    curve = [h for h in history if "reward" in h]
    if curve:
        print(f"mean reward: step {curve[0]['step']} {curve[0]['reward']:.3f} -> step {curve[-1]['step']} "
              f"{curve[-1]['reward']:.3f}; generated tokens {trainer.generated_tokens}")
    return {"log_history": history, "generated_tokens": trainer.generated_tokens}


def main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..grpo_config import ScaleGRPOConfig

    parser = TrlParser((GRPOScriptArguments, ScaleGRPOConfig), prog="scale-vlm grpo")
    try:
        script, args = parser.parse_args_and_config(argv)
        run(script, args)
    except (ValueError, FileNotFoundError) as err:
        print(f"scale-vlm grpo: error: {err}", file=sys.stderr)
        return 2
    return 0
