"""scale_vlm.drivers: the one SFT recipe of the demo, the comparison and the scripts."""

import pytest

from scale_vlm.drivers import CountingSFTTrainer, sft_args

SCHEDULE = {"schedule": "cosine", "think_weight_start": 0.8, "think_weight_end": 0.2, "answer_weight_start": 0.2,
            "answer_weight_end": 0.8}


def test_sft_recipe(tmp_path):
    args = sft_args(tmp_path / "run", "scale", SCHEDULE, steps=120, batch_size=32, learning_rate=2e-3, seed=3,
                    progress=False)
    assert (args.method, args.max_steps, args.per_device_train_batch_size, args.learning_rate) == ("scale", 120, 32, 2e-3)
    assert (args.seed, args.data_seed, args.gradient_accumulation_steps) == (3, 3, 1)
    assert (args.warmup_steps, args.weight_decay, args.adam_beta2, args.max_grad_norm) == (0.05, 0.01, 0.98, 1.0)
    assert args.lr_scheduler_type == "cosine" and args.logging_steps == 4  # 120 // 30: about 30 log lines per run
    assert args.disable_tqdm and args.save_strategy == "no" and args.output_dir == str(tmp_path / "run")
    assert sft_args(tmp_path, "vanilla", SCHEDULE, steps=6, batch_size=8, learning_rate=1e-3, seed=0,
                    progress=True).logging_steps == 1
    frozen = sft_args(tmp_path, "vanilla", SCHEDULE, steps=6, batch_size=8, learning_rate=1e-3, seed=0, progress=True,
                      freeze_vision_tower=True)
    assert frozen.freeze_vision_tower and not frozen.disable_tqdm


def test_sft_recipe_overrides_replace_recipe_fields(tmp_path):
    """The benchmarks build their configs through the recipe and fix some of its fields (a log line per step, the
    device they were told); the fields they leave alone keep the recipe's values."""
    args = sft_args(tmp_path, "vanilla", {}, steps=60, batch_size=8, learning_rate=1e-3, seed=0, progress=False,
                    logging_steps=1, use_cpu=True, max_length=4096)
    assert (args.logging_steps, args.use_cpu, args.max_length) == (1, True, 4096)
    assert (args.lr_scheduler_type, args.warmup_steps, args.adam_beta2, args.max_steps) == ("cosine", 0.05, 0.98, 60)


def test_sft_run_counts_input_and_supervised_tokens(tiny_qwen_dir, messages_dataset, tmp_path):
    """One optimizer step over all 8 examples: the counts are the prepared rows' lengths and labelled targets."""
    from scale_vlm.drivers import prepare_sft_rows, train_sft

    rows = prepare_sft_rows(messages_dataset, tiny_qwen_dir)
    args = sft_args(tmp_path / "run", "scale", SCHEDULE, steps=1, batch_size=8, learning_rate=1e-3, seed=0,
                    progress=False)
    run = train_sft(tiny_qwen_dir, args, rows)
    assert isinstance(run.trainer, CountingSFTTrainer) and run.seconds > 0
    assert run.trainer.input_tokens == sum(len(ids) for ids in rows["input_ids"])
    assert run.trainer.supervised_tokens == sum(sum(t != -100 for t in labels[1:]) for labels in rows["labels"])
    assert any("loss_think" in h for h in run.log_history)
    saved = run.save(tmp_path / "model")
    assert (saved / "model.safetensors").is_file()


@pytest.mark.parametrize("bad", ["lean", "fast"])  # "lean": an old name of the fused path
def test_recipe_takes_only_the_config_loss_paths(tmp_path, bad):
    with pytest.raises(ValueError, match="loss_impl"):
        sft_args(tmp_path, "scale", SCHEDULE, steps=6, batch_size=8, learning_rate=1e-3, seed=0, progress=False,
                 loss_impl=bad)


def test_scale_vlm_sft_builds_and_trains_through_the_drivers(tiny_qwen_dir, messages_dataset, tmp_path):
    """``scale-vlm sft`` and the demo share one build-and-train: the command's trainer is the drivers' counting
    trainer, and its counts are the rows' real and supervised tokens."""
    from trl import ModelConfig

    from scale_vlm.cli.sft import SFTScriptArguments, run_sft
    from scale_vlm.drivers import prepare_sft_rows
    from scale_vlm.sft_config import ScaleSFTConfig

    data = tmp_path / "train"
    messages_dataset.save_to_disk(str(data))  # a datasets folder: the images stay images
    # two steps of 4: the counts add up over steps (each of the 8 rows is seen once)
    args = ScaleSFTConfig(output_dir=str(tmp_path / "cli"), max_steps=2, per_device_train_batch_size=4,
                          save_strategy="no", report_to="none", use_cpu=True, method="scale")
    trainer = run_sft(SFTScriptArguments(dataset_name=str(data)), args, ModelConfig(model_name_or_path=tiny_qwen_dir))
    assert type(trainer) is CountingSFTTrainer and trainer.state.global_step == 2
    rows = prepare_sft_rows(messages_dataset, tiny_qwen_dir)
    assert trainer.input_tokens == sum(len(ids) for ids in rows["input_ids"])
    assert trainer.supervised_tokens == sum(sum(t != -100 for t in labels[1:]) for labels in rows["labels"])
