"""``scale-vlm sft``: vanilla or SCALe SFT of a VLM from the command line (flags or ``--config file.yaml``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field

import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from .. import run_guard
from ..run_guard import MODEL_FILES, WEIGHT_FILES, PreviousRunError, RunFiles, resolve_resume_checkpoint
from ..sft_config import SCALE_SFT_FIELDS, ScaleSFTConfig
from .common import parse

logger = logging.getLogger(__name__)
# What a run writes into output_dir (run_guard's one output-folder rule): the checkpoints, the trainer state, the
# weights, the resolved config and the reports are a run's markers; the result files are written at the end of a run
# and moved aside with it, so none is mistaken for the next run's.
RESULT_FILES = ("data_report.json", "eval_data_report.json", "eval_results.json", "all_results.json",
                "train_results.json")
SFT_RUN = RunFiles(
    "sft", markers=("checkpoint-*", "trainer_state.json", *WEIGHT_FILES, "scale_config.yaml", *RESULT_FILES),
    companions=(*MODEL_FILES, "prompt_form.json", "training_curves.png", "README.md"),
    resume="resume it with --resume_from_checkpoint true",
)


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Data arguments: ``dataset_name`` is a local JSON/JSONL/parquet file, a ``save_to_disk`` folder or a dataset name."""

    dataset_name: str | None = field(default=None, metadata={"help": "Data file, datasets folder or dataset name."})
    # None instead of TRL's "test": an evaluation split is used only when asked for, so a data file without one
    # still trains, and a split that is given is never ignored.
    dataset_test_split: str | None = field(default=None, metadata={
        "help": "Split to evaluate on, prepared like the training split: evaluated every --eval_steps / epoch with "
                "--eval_strategy steps|epoch, else once after training (eval_loss, eval_loss_think, "
                "eval_loss_answer in eval_results.json). Unset: no evaluation ('test' with --eval_strategy)."})


def _resuming(args: ScaleSFTConfig) -> bool:
    return run_guard.asks_resume(args.resume_from_checkpoint)


def check_output_dir(args: ScaleSFTConfig, model: str | None = None) -> None:
    """Refuse to start in a folder that holds another run, unless resuming or explicitly overwriting (run_guard's
    rule; ``model``: the model folder this run reads, which --overwrite_output_dir must not move aside)."""
    if not args.output_dir:
        return
    try:
        run_guard.check_output_dir(args.output_dir, SFT_RUN, args.overwrite_output_dir, _resuming(args),
                                   inputs={"--model_name_or_path": model})
    except PreviousRunError as err:
        # SystemExit, as before for API callers; the command line prints it in the one error style (exit 2).
        raise SystemExit(str(err)) from err


def move_previous_run_aside(args: ScaleSFTConfig) -> str | None:
    """With ``--overwrite_output_dir`` (and no resume), move the previous run's files into
    ``previous-run-<time>/`` (run_guard's rule). Returns the folder they went to."""
    if not args.output_dir:
        return None
    aside = run_guard.move_previous_run_aside(args.output_dir, SFT_RUN, args.overwrite_output_dir, _resuming(args))
    return str(aside) if aside is not None else None


def say_resume(checkpoint: str, args, command: str = "sft") -> None:
    """One line naming the checkpoint a resumed run continues from, and where in training it is."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        state = json.load(f)
    total = args.max_steps if args.max_steps and args.max_steps > 0 else state.get("max_steps")  # this run's goal
    print(f"scale-vlm {command}: resuming from {checkpoint} (step {state.get('global_step')}"
          f"{f' of {total}' if total and total > 0 else ''}, epoch {float(state.get('epoch') or 0):.2f})",
          file=sys.stderr, flush=True)


def check_unsupported_options(script_args: SFTScriptArguments) -> None:
    """Refuse TRL options this command cannot honour, instead of accepting and ignoring them."""
    if script_args.dataset_config:
        raise ValueError(f"--dataset_config {script_args.dataset_config!r} is not supported by scale-vlm sft; load "
                         "that configuration with datasets, save it with save_to_disk (or as JSONL) and pass that "
                         "folder or file as --dataset_name")
    if script_args.dataset_streaming:
        raise ValueError("--dataset_streaming is not supported by scale-vlm sft: the data is rendered and segmented "
                         "once before training, which needs the whole split; drop --dataset_streaming")
    if script_args.ignore_bias_buffers:
        raise ValueError("--ignore_bias_buffers is not supported by scale-vlm sft (TRL's own scripts apply it to DPO only); drop it")


def quantization_config(model_args: ModelConfig, training_args: ScaleSFTConfig):
    """TRL's bitsandbytes config for --load_in_4bit / --load_in_8bit, or None; refused, with the reason, where
    bitsandbytes cannot quantise (no GPU, --use_cpu, bitsandbytes not installed) or nothing could be trained."""
    import importlib.util

    import torch
    from trl import get_quantization_config

    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
    if training_args.use_cpu or not torch.cuda.is_available():
        raise ValueError(f"{flag} needs a CUDA GPU (bitsandbytes quantises on the GPU) and this run has none"
                         f"{' (--use_cpu)' if training_args.use_cpu else ''}; drop {flag} to train unquantised")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"{flag} needs the bitsandbytes package, which is not installed: pip install bitsandbytes, "
                         f"or drop {flag}")
    if not model_args.use_peft:
        raise ValueError(f"{flag} freezes the base model in quantised form, so only LoRA adapters can train: add "
                         f"--use_peft (and --lora_r ...), or drop {flag}")
    return get_quantization_config(model_args)


def load_eval_split(script_args: SFTScriptArguments, training_args: ScaleSFTConfig, train_dataset):
    """The raw rows of the evaluation split, or None when no evaluation is asked for. Refused when the data gives
    the training rows for it (a single data file is one split whatever the split name), which would score the
    model on the data it was trained on."""
    from ..data.prepare import load_training_dataset

    split = script_args.dataset_test_split
    if split is None and training_args.eval_strategy != "no":
        split = "test"  # TRL's default evaluation split
    if split is None:
        return None
    flag = f"--dataset_test_split {split!r}"
    if split == script_args.dataset_train_split:
        raise ValueError(f"{flag} is also the training split, so the evaluation would score the training data; "
                         "choose another split")
    rows, _ = load_training_dataset(script_args.dataset_name, split, training_args.image_root)
    last = len(rows) - 1
    if len(rows) == len(train_dataset) and rows[0] == train_dataset[0] and rows[last] == train_dataset[last]:
        raise ValueError(
            f"{flag}: {script_args.dataset_name} gives the training rows for that split (a single data file is one "
            f"split whatever its name), so the evaluation would score the training data; give data with a separate "
            f"{split!r} split (a JSON file {{\"{script_args.dataset_train_split}\": [...], \"{split}\": [...]}}, a "
            f"folder with {script_args.dataset_train_split}.jsonl and {split}.jsonl, or a datasets folder), or leave "
            "--dataset_test_split unset")
    return rows


def run_sft(script_args: SFTScriptArguments, training_args: ScaleSFTConfig, model_args: ModelConfig):
    """Load model, processor and data, train, and save model + processor + resolved config to ``output_dir``."""
    from ..data.prepare import load_training_dataset
    from ..drivers import build_sft_trainer, timed_train
    from ..lora import check_lora_options, check_lora_run, lora_config, model_skeleton
    from ..model_loading import load_model
    from ..processors import load_processor
    from ..run_guard import check_local_path, check_output_writable

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if not script_args.dataset_name:
        raise ValueError("--dataset_name is required")
    check_unsupported_options(script_args)
    check_lora_options(model_args, "sft")
    lora_run = check_lora_run(model_args.model_name_or_path, model_args, "sft")
    # a LoRA run's base is frozen in whatever form it loads, quantised included: only the adapter trains
    quantization = quantization_config(dataclasses.replace(model_args, use_peft=model_args.use_peft or lora_run),
                                       training_args)
    check_output_dir(training_args, model_args.model_name_or_path)
    check_local_path(model_args.model_name_or_path, "model")
    # LoRA targets are resolved (and checked) on the model's module tree before its weights load
    skeleton = model_skeleton(model_args.model_name_or_path, model_args.model_revision,
                              training_args.trust_remote_code) if model_args.use_peft else None
    peft_config = lora_config(model_args, skeleton, "sft") if skeleton is not None else None
    check_local_path(script_args.dataset_name, "dataset")
    check_output_writable(training_args.output_dir)  # before training, not at the final save
    move_previous_run_aside(training_args)
    resume = resolve_resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    if resume is not None:
        say_resume(resume, training_args)

    model = load_model(model_args.model_name_or_path, trust_remote_code=training_args.trust_remote_code,
                       revision=model_args.model_revision, attn_implementation=model_args.attn_implementation,
                       dtype=model_args.dtype, quantization_config=quantization, train_adapter=lora_run)
    if model_args.use_peft and peft_config is None:
        peft_config = lora_config(model_args, model, "sft")
    processor = load_processor(model_args.model_name_or_path, trust_remote_code=training_args.trust_remote_code,
                               revision=model_args.model_revision)
    dataset, image_root = load_training_dataset(script_args.dataset_name, script_args.dataset_train_split, training_args.image_root)
    if training_args.image_root is None:
        training_args.image_root = image_root
    eval_dataset = load_eval_split(script_args, training_args, dataset)

    trainer = build_sft_trainer(model, processor, training_args, dataset, eval_dataset=eval_dataset,
                                peft_config=peft_config)
    timed_train(trainer, processor, resume_from_checkpoint=resume)
    if eval_dataset is not None and training_args.eval_strategy == "no":
        # No evaluation during training was asked for: the split is evaluated once, on the trained model.
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        save_resolved_config(training_args.output_dir, script_args, training_args, model_args)
        for split, report_file in (("train", "data_report.json"), ("eval", "eval_data_report.json")):
            report = trainer.preparation_reports.get(split)
            if report is not None:
                with open(os.path.join(training_args.output_dir, report_file), "w") as f:
                    json.dump(report.to_dict(), f, indent=2)
        save_prompt_form(training_args.output_dir, script_args, training_args, dataset)
        write_run_report(trainer, script_args, training_args, model_args, peft_config)
        print(f"saved the model, processor, scale_config.yaml, data_report.json, prompt_form.json, the model card "
              f"(README.md) and {TRAINING_CURVES} to {training_args.output_dir}")
    return trainer


def save_prompt_form(output_dir: str, script_args, training_args: ScaleSFTConfig, dataset) -> None:
    """Record the form of the prompts trained on (``prompt_form.json``): ``eval`` and ``grpo`` compare theirs with
    it before scoring or training the model on other prompts."""
    from ..eval.adapters import training_prompts
    from ..eval.prompt_form import prompt_form, write_prompt_form

    prompts = training_prompts(dataset, training_args.image_root, tags=training_args.tags)
    if prompts:
        source = f"{script_args.dataset_name} split {script_args.dataset_train_split!r}, as written (scale-vlm sft)"
        write_prompt_form(output_dir, prompt_form(prompts, source, training_args.tags))


TRAINING_CURVES = "training_curves.png"


def schedule_sentence(args: ScaleSFTConfig) -> str:
    mode = f", progress {args.progress_mode}" if getattr(args, "progress_mode", None) else ""
    return (f"{args.schedule}: think weight {args.think_weight_start} -> {args.think_weight_end}, answer weight "
            f"{args.answer_weight_start} -> {args.answer_weight_end}{mode}")


def lora_sentence(peft_config) -> str | None:
    if peft_config is None:
        return None
    targets = peft_config.target_modules
    targets = ", ".join(sorted(targets)) if isinstance(targets, (set, list, tuple)) else str(targets)
    return f"LoRA adapter (r {peft_config.r}, alpha {peft_config.lora_alpha}) on {targets}; base weights frozen"


def write_run_report(trainer, script_args, training_args: ScaleSFTConfig, model_args, peft_config) -> None:
    """The run's own model card (README.md, in place of TRL's generic text-generation card) and the training-curve
    figure (training_curves.png, the demo's figure)."""
    from ..eval.prompt_form import read_prompt_form
    from ..report import final_segment_losses, plot_training_curves, sft_model_card

    out = training_args.output_dir
    history = trainer.state.log_history
    plot = None
    if any("loss_think" in h for h in history):
        plot_training_curves({training_args.method: history}, os.path.join(out, TRAINING_CURVES))
        plot = TRAINING_CURVES
    report = trainer.preparation_reports.get("train")
    if report is None:
        return
    form = read_prompt_form(out)
    eval_metrics = next((h for h in reversed(history) if "eval_loss" in h), None)
    card = sft_model_card({
        "base": model_args.model_name_or_path, "output_dir": out, "method": training_args.method,
        "schedule": schedule_sentence(training_args), "lora": lora_sentence(peft_config),
        "dataset": script_args.dataset_name, "data_report": report.to_dict(), "steps": trainer.state.global_step,
        "epochs": float(trainer.state.epoch or 0.0), "final": final_segment_losses(history), "eval": eval_metrics,
        "prompt_form": form.to_dict() if form is not None else None, "plot": plot,
    })
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)


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


ESSENTIAL_OPTIONS = ("config", "model_name_or_path", "dataset_name", "dataset_train_split", "dataset_test_split",
                     "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "max_steps", "num_train_epochs",
                     "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_length",
                     "save_steps", "use_cpu", "use_peft", "lora_r")
# every option ScaleSFTConfig adds to TRL's, derived from its declarations; the method first
SCALE_OPTIONS = ("method", *(name for name in SCALE_SFT_FIELDS if name not in (*ESSENTIAL_OPTIONS, "method")))


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
