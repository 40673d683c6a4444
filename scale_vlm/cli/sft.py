"""``scale-vlm sft``: vanilla or SCALe SFT of a VLM from the command line (flags or ``--config file.yaml``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field

import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from ..sft_config import ScaleSFTConfig
from .common import parse

logger = logging.getLogger(__name__)
RUN_MARKERS = ("trainer_state.json", "model.safetensors", "scale_config.yaml")


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Data arguments: ``dataset_name`` is a local JSON/JSONL/parquet file, a ``save_to_disk`` folder or a dataset name."""

    dataset_name: str | None = field(default=None, metadata={"help": "Data file, datasets folder or dataset name."})


def _previous_run_files(out: str) -> list[str]:
    return sorted(e for e in os.listdir(out) if e.startswith("checkpoint-") or e in RUN_MARKERS + ("data_report.json",))


def check_output_dir(args: ScaleSFTConfig) -> None:
    """Refuse to start in a folder that holds another run, unless resuming or explicitly overwriting."""
    out = args.output_dir
    if not out or not os.path.isdir(out) or args.overwrite_output_dir or args.resume_from_checkpoint:
        return
    found = _previous_run_files(out)
    if found:
        # SystemExit, as before for API callers; the command line prints it in the one error style (exit 2).
        raise SystemExit(
            f"scale-vlm sft: output_dir {out!r} already holds a run ({', '.join(found[:3])}). "
            "Resume it with --resume_from_checkpoint, choose another --output_dir, or pass --overwrite_output_dir."
        )


def move_previous_run_aside(args: ScaleSFTConfig) -> str | None:
    """With ``--overwrite_output_dir`` (and no resume), move the previous run's checkpoints and result files into
    ``previous-run-<time>/``, so that a later ``--resume_from_checkpoint true`` can never take them for this run's.
    Moved, not deleted: the user may still want them. Returns the folder they went to."""
    out = args.output_dir
    if not (args.overwrite_output_dir and not args.resume_from_checkpoint and out and os.path.isdir(out)):
        return None
    found = _previous_run_files(out)
    if not found or int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return None  # the main process moves the files; the other ranks never read them
    aside = os.path.join(out, time.strftime("previous-run-%Y%m%d-%H%M%S"))
    os.makedirs(aside, exist_ok=True)
    for name in found:
        shutil.move(os.path.join(out, name), os.path.join(aside, name))
    print(f"scale-vlm sft: --overwrite_output_dir: moved the previous run's {', '.join(found[:4])}"
          f"{' ...' if len(found) > 4 else ''} to {aside} (delete it when no longer needed)", file=sys.stderr)
    return aside


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
        for _, path in sorted(steps, reverse=True):
            if is_complete_checkpoint(path):
                return path
            logger.warning("skipping incomplete checkpoint %s (the run died while writing it)", path)
        raise ValueError(f"no complete checkpoint to resume from in {output_dir!r}; start without "
                         "--resume_from_checkpoint")
    if not is_complete_checkpoint(str(resume)):
        raise ValueError(f"{resume!r} is not a complete checkpoint (no trainer_state.json or weights); pass "
                         "--resume_from_checkpoint true to take the newest complete one")
    return str(resume)


def run_sft(script_args: SFTScriptArguments, training_args: ScaleSFTConfig, model_args: ModelConfig):
    """Load model, processor and data, train, and save model + processor + resolved config to ``output_dir``."""
    from transformers import AutoModelForImageTextToText
    from trl import get_peft_config

    from ..data.prepare import load_training_dataset
    from ..processors import load_processor
    from ..run_guard import check_local_path, check_output_writable
    from ..sft_trainer import ScaleSFTTrainer

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if not script_args.dataset_name:
        raise ValueError("--dataset_name is required")
    check_output_dir(training_args)
    check_local_path(model_args.model_name_or_path, "model")
    check_local_path(script_args.dataset_name, "dataset")
    check_output_writable(training_args.output_dir)  # before training, not at the final save
    move_previous_run_aside(training_args)
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
        fix_model_card(training_args.output_dir, model_args.model_name_or_path)
        print(f"saved the model, processor, scale_config.yaml and data_report.json to {training_args.output_dir}")
    return trainer


def fix_model_card(output_dir: str, base: str) -> None:
    """TRL's model card names the base model only when it is a hub id; for a local base it writes
    "fine-tuned version of [None](https://huggingface.co/None)". Name the local base instead."""
    path = os.path.join(output_dir, "README.md")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("[None](https://huggingface.co/None)", f"the local model `{base}`")
    text = text.replace('model="None"', f'model="{output_dir}"')
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


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


SCALE_OPTIONS = ("method", "schedule", "think_weight_start", "think_weight_end", "answer_weight_start",
                 "answer_weight_end", "schedule_step_at", "normalization", "loss_impl", "think_open", "think_close",
                 "answer_open", "answer_close", "bad_example_policy", "image_root", "freeze_vision_tower")
ESSENTIAL_OPTIONS = ("config", "model_name_or_path", "dataset_name", "dataset_train_split", "output_dir",
                     "overwrite_output_dir", "resume_from_checkpoint", "max_steps", "num_train_epochs",
                     "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_length",
                     "save_steps", "use_cpu", "use_peft", "lora_r")


def group_options_first(parser) -> None:
    """Show the SCALe and the essential options at the top of ``--help`` (TRL's hundreds of options follow), and
    keep the usage line short."""
    parser.usage = "scale-vlm sft [--config FILE.yaml] --model_name_or_path M --dataset_name D --output_dir O [options]"
    groups = []
    for title, names in (("SCALe options", SCALE_OPTIONS), ("essential options", ESSENTIAL_OPTIONS)):
        group = parser.add_argument_group(title)
        for name in names:
            for old in parser._action_groups:
                for action in list(old._group_actions):
                    if action.dest == name and old is not group:
                        old._group_actions.remove(action)
                        group._group_actions.append(action)
        parser._action_groups.remove(group)
        groups.append(group)
    parser._action_groups[1:1] = groups


def main(argv: list[str] | None = None) -> int:
    parser = TrlParser((SFTScriptArguments, ScaleSFTConfig, ModelConfig), prog="scale-vlm sft")
    group_options_first(parser)
    script_args, training_args, model_args = parse(parser, argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    run_sft(script_args, training_args, model_args)
    return 0
