"""``scale-vlm grpo --model_name_or_path SFT_CHECKPOINT --dataset_name builtin|scienceqa|PATH --output_dir DIR``.

GRPO (TRL's ``GRPOTrainer``) from an SFT checkpoint with the accuracy and format rewards. Every ``GRPOConfig``
flag works (``--loss_type``, ``--beta``, ``--num_generations``, ``--max_completion_length``, ``--learning_rate``,
``--use_vllm`` when vLLM is installed, ...), plus ``--accuracy_weight`` / ``--format_weight`` and the tag names.
Options can also come from ``--config file.yaml``. Per-step metrics land in ``DIR/log_history.json``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GRPOScriptArguments:
    # TRL's option names, as in scale-vlm sft; the older --model / --dataset / --dataset_split still work (aliases).
    model_name_or_path: str = field(default=None, metadata={
        "help": "SFT checkpoint folder (or hub name)", "aliases": ["--model"]})
    dataset_name: str = field(default="builtin", metadata={
        "help": "builtin, scienceqa, iconqa, or a local dataset path (the SFT data file works as it is)",
        "aliases": ["--dataset"]})
    dataset_train_split: str = field(default="train", metadata={
        "help": "split to draw GRPO prompts from", "aliases": ["--dataset_split"]})
    adapter: str = field(default="auto", metadata={
        "help": "dataset schema (as in scale-vlm eval): auto, scienceqa, iconqa, builtin, columns, sft"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts"})
    builtin_size: int = field(default=512, metadata={"help": "--dataset_name builtin: prompts to generate"})
    builtin_seed: int = field(default=0, metadata={"help": "--dataset_name builtin: generation seed"})
    image_only: bool = field(default=False, metadata={"help": "keep only prompts with an image"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    # The generic adapter's column mapping, as in scale-vlm eval (an SFT data file needs none: adapter 'sft').
    image_column: str | None = field(default="image", metadata={"help": "generic adapter: image column ('' = none)"})
    question_column: str = field(default="question", metadata={"help": "generic adapter: question column"})
    answer_column: str = field(default="answer", metadata={"help": "generic adapter: answer column"})
    choices_column: str | None = field(default=None, metadata={"help": "generic adapter: choices column"})
    id_column: str | None = field(default=None, metadata={"help": "generic adapter: id column"})
    answer_format: str = field(default="auto", metadata={
        "help": "with choices: 'index' (0-based option indices), 'text' (letter or choice text) or 'auto'"})

    def columns(self):
        from ..eval.adapters import ColumnMapping

        mapping = ColumnMapping(image_column=self.image_column or None, question_column=self.question_column,
                                answer_column=self.answer_column, choices_column=self.choices_column or None,
                                id_column=self.id_column or None)
        # Only an explicit mapping forces the generic adapter under "auto" (as in scale-vlm eval).
        return None if mapping == ColumnMapping() and self.adapter != "columns" else mapping


def run(script: GRPOScriptArguments, args) -> dict:
    import torch

    from ..grpo_trainer import ScaleGRPOTrainer, load_grpo_dataset
    from ..processors import load_processor
    from ..run_guard import check_local_path, check_output_writable

    if not script.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ValueError("--use_vllm needs vLLM: pip install 'scale-vlm[vllm]'")
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(f"{out} is not empty; pass --overwrite_output_dir to write into it")
    check_local_path(script.model_name_or_path, "model")
    check_output_writable(out)  # before training, not at the final save
    if script.threads:
        torch.set_num_threads(script.threads)
    dataset = load_grpo_dataset(script.dataset_name, script.dataset_train_split, limit=script.limit, seed=script.builtin_seed,
                                builtin_size=script.builtin_size, image_only=script.image_only, tags=args.tags,
                                adapter=script.adapter, columns=script.columns(), answer_format=script.answer_format)
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
    from .common import run_command

    return run_command("grpo", _main, argv)


def _main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..grpo_config import ScaleGRPOConfig
    from .common import parse

    script, args = parse(TrlParser((GRPOScriptArguments, ScaleGRPOConfig), prog="scale-vlm grpo"), argv)
    run(script, args)
    return 0
