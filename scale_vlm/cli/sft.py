"""``scale-vlm sft``: vanilla or SCALe SFT of a VLM from the command line (flags or ``--config file.yaml``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from ..sft_config import ScaleSFTConfig

logger = logging.getLogger(__name__)
RUN_MARKERS = ("trainer_state.json", "model.safetensors", "scale_config.yaml")


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Data arguments: ``dataset_name`` is a local JSON/JSONL/parquet file, a ``save_to_disk`` folder or a dataset name."""

    dataset_name: str | None = field(default=None, metadata={"help": "Data file, datasets folder or dataset name."})


def check_output_dir(args: ScaleSFTConfig) -> None:
    """Refuse to start in a folder that holds another run, unless resuming or explicitly overwriting."""
    out = args.output_dir
    if not out or not os.path.isdir(out) or args.overwrite_output_dir or args.resume_from_checkpoint:
        return
    entries = os.listdir(out)
    found = [e for e in entries if e.startswith("checkpoint-") or e in RUN_MARKERS]
    if found:
        raise SystemExit(
            f"scale-vlm sft: output_dir {out!r} already holds a run ({', '.join(sorted(found)[:3])}). "
            "Resume it with --resume_from_checkpoint, choose another --output_dir, or pass --overwrite_output_dir."
        )


def is_complete_checkpoint(path: str) -> bool:
    """Trainer writes ``trainer_state.json`` last: a checkpoint without a readable one was cut short by a crash."""
    state = os.path.join(path, "trainer_state.json")
    try:
        with open(state) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return any(os.path.exists(os.path.join(path, w)) for w in ("model.safetensors", "model.safetensors.index.json",
                                                                 "adapter_model.safetensors"))


def resolve_resume_checkpoint(output_dir: str, resume) -> str | None:
    """``--resume_from_checkpoint true`` -> the newest *complete* checkpoint of ``output_dir``; a path is checked."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() in ("true", "last"):
        steps = []
        for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
            if name.startswith("checkpoint-") and name.split("-", 1)[1].isdigit():
                steps.append((int(name.split("-", 1)[1]), os.path.join(output_dir, name)))
        for step, path in sorted(steps, reverse=True):
            if is_complete_checkpoint(path):
                return path
            logger.warning("skipping incomplete checkpoint %s (the run died while writing it)", path)
        raise SystemExit(f"scale-vlm sft: no complete checkpoint to resume from in {output_dir!r}")
    if not is_complete_checkpoint(str(resume)):
        raise SystemExit(f"scale-vlm sft: {resume!r} is not a complete checkpoint (no trainer_state.json or weights)")
    return str(resume)


def run_sft(script_args: SFTScriptArguments, training_args: ScaleSFTConfig, model_args: ModelConfig):
    """Load model, processor and data, train, and save model + processor + resolved config to ``output_dir``."""
    from transformers import AutoModelForImageTextToText
    from trl import get_peft_config

    from ..data.prepare import load_training_dataset
    from ..processors import load_processor
    from ..sft_trainer import ScaleSFTTrainer

    if not model_args.model_name_or_path:
        raise SystemExit("scale-vlm sft: --model_name_or_path is required")
    if not script_args.dataset_name:
        raise SystemExit("scale-vlm sft: --dataset_name is required")
    check_output_dir(training_args)
    resume = resolve_resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)

    model_kwargs = dict(
        trust_remote_code=training_args.trust_remote_code,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    if model_args.dtype not in (None, "auto"):
        model_kwargs["dtype"] = model_args.dtype
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **model_kwargs)
    processor = load_processor(model_args.model_name_or_path, trust_remote_code=training_args.trust_remote_code)
    dataset, image_root = load_training_dataset(script_args.dataset_name, script_args.dataset_train_split, training_args.image_root)
    if training_args.image_root is None:
        training_args.image_root = image_root

    trainer = ScaleSFTTrainer(
        model=model, args=training_args, train_dataset=dataset, processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        save_resolved_config(training_args.output_dir, script_args, training_args, model_args)
        report = trainer.preparation_reports.get("train")
        if report is not None:
            with open(os.path.join(training_args.output_dir, "data_report.json"), "w") as f:
                json.dump(report.to_dict(), f, indent=2)
            print(report.summary())
    return trainer


def save_resolved_config(output_dir: str, script_args, training_args: ScaleSFTConfig, model_args) -> str:
    """Write every resolved option to ``scale_config.yaml`` (loadable again with ``--config``)."""
    resolved = {}
    for part in (asdict(script_args), training_args.to_dict(), asdict(model_args)):
        resolved.update({k: _plain(v) for k, v in part.items() if not k.startswith("_")})
    for secret in ("hub_token", "push_to_hub_token"):
        resolved.pop(secret, None)
    path = os.path.join(output_dir, "scale_config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=True)
    return path


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = TrlParser((SFTScriptArguments, ScaleSFTConfig, ModelConfig), prog="scale-vlm sft")
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    run_sft(script_args, training_args, model_args)
    return 0
