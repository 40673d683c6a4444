"""``scale-vlm grpo --model_name_or_path SFT_CHECKPOINT --dataset_name builtin|scienceqa|PATH --output_dir DIR``.

GRPO (TRL's ``GRPOTrainer``) from an SFT checkpoint with the accuracy and format rewards. Every ``GRPOConfig``
flag works (``--loss_type``, ``--beta``, ``--num_generations``, ``--max_completion_length``, ``--learning_rate``,
``--use_vllm`` when vLLM is installed, ...), plus ``--accuracy_weight`` / ``--format_weight`` and the tag names.
Options can also come from ``--config file.yaml``. Per-step metrics land in ``DIR/log_history.json``. A checkpoint
is written every ``--save_steps`` steps (TRL's 500 by default), and a killed run continues from the last one with
``--resume_from_checkpoint true`` (its prompts and settings checked against the run's, its generated-token count
carried on).

LoRA: a ``scale-vlm sft --use_peft`` output is continued: its base model is loaded frozen and the SFT adapter keeps
training (TRL copies it as the frozen KL reference when ``--beta`` > 0), so the GRPO output is an adapter of the
same base, loadable like the SFT one. A full model takes TRL's LoRA options (``--use_peft``, ``--lora_r``,
``--lora_target_modules``, ... as in ``scale-vlm sft``), passed to ``GRPOTrainer`` as its ``peft_config``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig

from ..run_guard import MODEL_FILES, WEIGHT_FILES, RunFiles

logger = logging.getLogger(__name__)
# What a run writes into output_dir (run_guard's one output-folder rule); TRL's checkpoints and model card included.
REWARD_CURVE = "reward_curve.png"
GRPO_RUN = RunFiles("grpo", markers=("checkpoint-*", *WEIGHT_FILES, "log_history.json", "prompt_form.json"),
                    companions=(*MODEL_FILES, "README.md", REWARD_CURVE),
                    resume="resume it with --resume_from_checkpoint true")


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
    choices_column: str | None = field(default=None, metadata={
        "help": "generic adapter: choices column (default: 'choices' when the data has one; '' for none)"})
    id_column: str | None = field(default=None, metadata={"help": "generic adapter: id column"})
    answer_format: str = field(default="auto", metadata={
        "help": "with choices: 'index' (0-based option indices), 'text' (letter or choice text) or 'auto'"})
    allow_prompt_mismatch: bool = field(default=False, metadata={
        "help": "train even when the prompts differ from those the SFT model was trained on (its prompt_form.json)"})
    # The greedy probe: the scored (greedy) accuracy during training, which the sampled reward need not follow.
    probe_every: int = field(default=0, metadata={
        "help": "evaluate greedy accuracy on --probe_limit questions of --probe_split before training and every N "
                "steps (log rows 'probe/accuracy', 'probe/malformed_rate'; 0 = off)"})
    probe_split: str = field(default="test", metadata={"help": "split of --dataset_name the probe reads"})
    probe_limit: int = field(default=100, metadata={"help": "questions the probe evaluates (the split's first)"})
    probe_max_new_tokens: int = field(default=256, metadata={"help": "the probe's generation budget (tokens)"})

    def columns(self):
        from ..eval.adapters import ColumnMapping

        mapping = ColumnMapping(image_column=self.image_column or None, question_column=self.question_column,
                                answer_column=self.answer_column, choices_column=self.choices_column,
                                id_column=self.id_column or None)
        # Only an explicit mapping forces the generic adapter under "auto" (as in scale-vlm eval).
        return None if mapping == ColumnMapping() and self.adapter != "columns" else mapping


# TRL's ModelConfig options (LoRA, quantisation, dtype), under their own names, as in scale-vlm sft; the model
# itself is GRPOScriptArguments.model_name_or_path (which keeps its older --model spelling).
GRPOModelArguments = dataclasses.make_dataclass(
    "GRPOModelArguments",
    [(f.name, f.type, field(default=f.default, metadata=f.metadata))
     for f in dataclasses.fields(ModelConfig) if f.name != "model_name_or_path"])


def model_config(script: GRPOScriptArguments, model_args=None) -> ModelConfig:
    values = dataclasses.asdict(model_args) if model_args is not None else {}
    return ModelConfig(model_name_or_path=script.model_name_or_path, **values)


def run(script: GRPOScriptArguments, args, model_args=None) -> dict:
    import torch

    from ..drivers import timed_train
    from ..eval.adapters import load_eval_dataset
    from ..grpo_trainer import GreedyProbe, ScaleGRPOTrainer, load_grpo_dataset
    from ..lora import check_lora_options, check_lora_run, lora_config, model_skeleton
    from ..model_loading import load_model
    from ..processors import load_processor
    from ..report import probe_budget_note, probe_curve
    from ..run_guard import (
        asks_resume,
        check_local_path,
        check_output_dir,
        check_output_writable,
        move_previous_run_aside,
        resolve_resume_checkpoint,
    )
    from .sft import quantization_config, say_resume

    if not script.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if script.probe_every < 0 or (script.probe_every and script.probe_limit < 1):
        raise ValueError(f"--probe_every {script.probe_every} --probe_limit {script.probe_limit}: give a positive "
                         "interval and at least one question, or --probe_every 0 for no probe")
    model_args = model_config(script, model_args)
    check_lora_options(model_args, "grpo")
    lora_run = check_lora_run(script.model_name_or_path, model_args, "grpo")
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ValueError("--use_vllm needs vLLM: pip install 'scale-vlm[vllm]'")
    out = Path(args.output_dir)
    resuming = asks_resume(args.resume_from_checkpoint)
    check_output_dir(out, GRPO_RUN, args.overwrite_output_dir, resuming,
                     inputs={"--model_name_or_path": script.model_name_or_path})
    check_local_path(script.model_name_or_path, "model")
    check_output_writable(out)  # before training, not at the final save
    move_previous_run_aside(out, GRPO_RUN, args.overwrite_output_dir, resuming)
    # the checkpoint, found and checked before anything loads (the run's own is checked again by the trainer)
    resume = resolve_resume_checkpoint(str(out), args.resume_from_checkpoint)
    if resume is not None:
        say_resume(resume, args, "grpo")
    if script.threads:
        torch.set_num_threads(script.threads)
    # a LoRA run's base is frozen in whatever form it loads, quantised included: only the adapter trains
    quantization = quantization_config(dataclasses.replace(model_args, use_peft=model_args.use_peft or lora_run), args)
    peft_config = None
    if model_args.use_peft:  # resolved and checked on the module tree, before the weights load
        skeleton = model_skeleton(script.model_name_or_path, model_args.model_revision, args.trust_remote_code)
        if skeleton is not None:
            peft_config = lora_config(model_args, skeleton, "grpo")
    dataset = load_grpo_dataset(script.dataset_name, script.dataset_train_split, limit=script.limit, seed=script.builtin_seed,
                                builtin_size=script.builtin_size, image_only=script.image_only, tags=args.tags,
                                adapter=script.adapter, columns=script.columns(), answer_format=script.answer_format)
    from ..eval.prompt_form import check_prompts, prompt_form, write_prompt_form

    prompts = [row[0]["content"][-1]["text"] for row in dataset["prompt"]]
    source = f"{script.dataset_name} split {script.dataset_train_split!r}, --adapter {script.adapter} (scale-vlm grpo)"
    check_prompts(script.model_name_or_path, prompts, source, "grpo", script.allow_prompt_mismatch, args.tags)
    probe_examples = None
    if script.probe_every:
        probe_examples = load_eval_dataset(
            script.dataset_name, script.probe_split, limit=script.probe_limit, seed=script.builtin_seed,
            builtin_size=script.probe_limit, image_only=script.image_only, tags=args.tags, adapter=script.adapter,
            columns=script.columns(), answer_format=script.answer_format)
        check_prompts(script.model_name_or_path, [ex.prompt for ex in probe_examples],
                      f"{script.dataset_name} split {script.probe_split!r} (the greedy probe of scale-vlm grpo)",
                      "grpo", script.allow_prompt_mismatch, args.tags)
    model = load_model(script.model_name_or_path, trust_remote_code=args.trust_remote_code,
                       revision=model_args.model_revision, attn_implementation=model_args.attn_implementation,
                       dtype=model_args.dtype, quantization_config=quantization, train_adapter=True)
    if lora_run:
        logger.info("scale-vlm grpo: %s is a LoRA run: continuing its adapter (r=%s) on the frozen base %s",
                    script.model_name_or_path, model.peft_config["default"].r,
                    model.peft_config["default"].base_model_name_or_path)
    elif model_args.use_peft and peft_config is None:
        peft_config = lora_config(model_args, model, "grpo")
    if quantization is None and (torch.cuda.is_available() is False or args.use_cpu):
        model = model.to(torch.float32)
    processor = load_processor(script.model_name_or_path, trust_remote_code=args.trust_remote_code)
    callbacks = []
    if probe_examples is not None:
        callbacks.append(GreedyProbe(probe_examples, script.probe_every, processor=processor,
                                     max_new_tokens=script.probe_max_new_tokens, tags=args.tags))
    trainer = ScaleGRPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                               peft_config=peft_config, callbacks=callbacks)
    # generated_tokens and the training seconds continue from the checkpoint (kept in each one by timed_train)
    timed_train(trainer, processor, resume, carried=("generated_tokens",))
    if "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")  # TRL's frozen copy of the SFT adapter (the KL reference), not a result
    trainer.save_model(args.output_dir)
    processor.save_pretrained(args.output_dir)
    write_prompt_form(out, prompt_form(prompts, source, args.tags))  # what eval of this model compares with
    history = trainer.state.log_history
    (out / "log_history.json").write_text(json.dumps(history, indent=1) + "\n")
    curve = [h for h in history if "reward" in h]
    probe = probe_curve(history)
    if probe:
        print(f"greedy probe accuracy ({script.probe_limit} questions of {script.probe_split!r}): step "
              f"{probe[0]['step']} {probe[0]['accuracy']:.3f} -> step {probe[-1]['step']} {probe[-1]['accuracy']:.3f}"
              f"{probe_budget_note(probe)}")
    if curve:
        print(f"mean reward: step {curve[0]['step']} {curve[0]['reward']:.3f} -> step {curve[-1]['step']} "
              f"{curve[-1]['reward']:.3f}; generated tokens {trainer.generated_tokens}")
    write_run_report(trainer, script, args, len(dataset))
    return {"log_history": history, "generated_tokens": trainer.generated_tokens}


def write_run_report(trainer, script: GRPOScriptArguments, args, num_prompts: int) -> None:
    """The run's own model card (README.md, in place of TRL's generic card) and the reward figure (reward_curve.png).
    The adapter, new or a LoRA run's continued, is the trained policy's own."""
    from ..eval.prompt_form import read_prompt_form
    from ..report import grpo_model_card, plot_reward_curve, probe_curve, reward_curve
    from .sft import lora_sentence

    out = Path(args.output_dir)
    curve = reward_curve(trainer.state.log_history)
    plot = None
    if curve and all(key in row for row in curve for key in ("accuracy", "format")):
        plot_reward_curve(curve, out / REWARD_CURVE)
        plot = REWARD_CURVE
    form = read_prompt_form(out)
    card = grpo_model_card({
        "base": script.model_name_or_path, "output_dir": str(out), "lora": lora_sentence(getattr(trainer.model, "peft_config", {}).get("default")),
        "dataset": script.dataset_name, "prompts": num_prompts, "rewards": list(zip(trainer.reward_func_names, trainer.reward_weights.tolist())),
        "num_generations": args.num_generations, "beta": args.beta, "learning_rate": args.learning_rate,
        "steps": trainer.state.global_step, "epochs": float(trainer.state.epoch or 0.0), "curve": curve,
        "generated_tokens": trainer.generated_tokens, "prompt_form": form.to_dict() if form is not None else None,
        "plot": plot, "probe": probe_curve(trainer.state.log_history),
        "probe_questions": f"the first {script.probe_limit} questions of split {script.probe_split!r}",
    })
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv: list[str]) -> int:
    from .common import run_command

    return run_command("grpo", _main, argv)


def _main(argv: list[str]) -> int:
    from trl import TrlParser

    from ..grpo_config import ScaleGRPOConfig
    from .common import parse

    script, args, model_args = parse(TrlParser((GRPOScriptArguments, ScaleGRPOConfig, GRPOModelArguments),
                                               prog="scale-vlm grpo"), argv)
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING)
    run(script, args, model_args)
    return 0
