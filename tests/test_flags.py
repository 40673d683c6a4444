"""Every option ``scale-vlm sft`` and ``ScaleSFTTrainer`` accept has an effect, or is refused with the reason (exit 2)."""

import json

import pytest
import torch
from conftest import messages_row

from scale_vlm.cli import main


def _rows(tmp_path, indices, prefix):
    rows = []
    for i in indices:
        row = messages_row(i)
        name = f"{prefix}{i}.png"
        row["images"][0].save(tmp_path / name)
        row["images"] = [name]
        rows.append(row)
    return rows


def _sft_args(model_dir, data, out, *extra):
    return ["sft", "--model_name_or_path", model_dir, "--dataset_name", str(data), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--use_cpu",
            "--save_strategy", "no", *extra]


@pytest.fixture()
def split_file(tmp_path):
    """A JSON file with a train split (8 rows) and a test split (4 other rows)."""
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"train": _rows(tmp_path, range(8), "train"),
                                "test": _rows(tmp_path, range(8, 12), "test")}))
    return path


@pytest.fixture()
def single_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows(tmp_path, range(8), "img")))
    return path


# ------------------------------------------------------------------------------------------- freeze_vision_tower


def test_freeze_vision_tower_with_the_model_given_by_name(tiny_qwen_dir, messages_dataset, tmp_path):
    """The README's Python API passes the model as a name: the vision tower must stay as it was."""
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    initial, _ = load_base(tiny_qwen_dir)
    before = {n: p.detach().float().clone() for n, p in initial.named_parameters()}
    args = ScaleSFTConfig(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                          learning_rate=1e-2, use_cpu=True, save_strategy="no", report_to="none",
                          freeze_vision_tower=True)
    trainer = ScaleSFTTrainer(model=tiny_qwen_dir, args=args, train_dataset=messages_dataset)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    vision = [n for n in after if ".visual." in f".{n}"]
    language = [n for n in after if ".language_model." in f".{n}"]
    assert vision and language
    assert not any(after[n].requires_grad for n in vision)
    for n in vision:
        assert torch.equal(after[n].detach().float(), before[n]), f"{n} changed although the vision tower is frozen"
    # the run did train: the language model moved
    assert any(not torch.equal(after[n].detach().float(), before[n]) for n in language)


# ------------------------------------------------------------------------------------------- --dataset_test_split


def test_test_split_is_evaluated_after_training(tiny_qwen_dir, split_file, tmp_path):
    out = tmp_path / "run"
    assert main(_sft_args(tiny_qwen_dir, split_file, out, "--dataset_test_split", "test")) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "eval_loss_think", "eval_loss_answer"} <= set(results)
    assert results["eval_loss_think"] > 0 and results["eval_loss_answer"] > 0
    # the 4 rows of the test split were evaluated, not the 8 training rows
    assert json.loads((out / "eval_data_report.json").read_text())["kept"] == 4
    assert json.loads((out / "data_report.json").read_text())["kept"] == 8


def test_test_split_is_evaluated_during_training_with_eval_strategy(tiny_qwen_dir, split_file, tmp_path):
    # --eval_strategy without --dataset_test_split evaluates TRL's default split, "test"
    out = tmp_path / "run"
    assert main(_sft_args(tiny_qwen_dir, split_file, out, "--eval_strategy", "steps",
                          "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "2")) == 0
    history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    evaluated = [h for h in history if "eval_loss" in h]
    assert [h["step"] for h in evaluated] == [1, 2]
    assert all(h["eval_loss_think"] > 0 and h["eval_loss_answer"] > 0 for h in evaluated)
    assert not (out / "eval_results.json").exists()  # evaluated during training, not once more after it


def test_test_split_that_is_the_training_data_is_refused(tiny_qwen_dir, single_file, tmp_path, capsys):
    # a JSONL file is one split: "test" would be the training rows
    assert main(_sft_args(tiny_qwen_dir, single_file, tmp_path / "run", "--dataset_test_split", "test")) == 2
    err = capsys.readouterr().err
    assert "--dataset_test_split 'test'" in err and "gives the training rows" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_test_split_equal_to_the_train_split_is_refused(tiny_qwen_dir, split_file, tmp_path, capsys):
    assert main(_sft_args(tiny_qwen_dir, split_file, tmp_path / "run", "--dataset_test_split", "train")) == 2
    assert "--dataset_test_split 'train' is also the training split" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- quantisation


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantisation_is_refused_on_cpu(flag, tiny_qwen_dir, single_file, tmp_path, capsys):
    assert main(_sft_args(tiny_qwen_dir, single_file, tmp_path / "run", flag, "--use_peft")) == 2
    err = capsys.readouterr().err
    assert f"scale-vlm sft: error: {flag} needs a CUDA GPU" in err and "--use_cpu" in err
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


def _quantisation(monkeypatch, bitsandbytes_installed: bool, **model_flags):
    """``quantization_config`` as on a GPU machine, with or without bitsandbytes."""
    import importlib.util

    from trl import ModelConfig

    from scale_vlm.cli.sft import quantization_config

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        (object() if bitsandbytes_installed else None) if name == "bitsandbytes" else find_spec(name, *a)))

    class Args:
        use_cpu = False

    return quantization_config(ModelConfig(model_name_or_path="m", **model_flags), Args())


def test_quantisation_without_bitsandbytes_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="--load_in_4bit needs the bitsandbytes package"):
        _quantisation(monkeypatch, False, load_in_4bit=True, use_peft=True)


def test_quantisation_without_lora_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="--load_in_8bit freezes the base model .* add --use_peft"):
        _quantisation(monkeypatch, True, load_in_8bit=True)


def test_quantisation_is_wired_to_trl_config(monkeypatch):
    config = _quantisation(monkeypatch, True, load_in_4bit=True, use_peft=True, bnb_4bit_quant_type="fp4")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "fp4"
    assert _quantisation(monkeypatch, True, use_peft=True) is None


# ------------------------------------------------------------------------------------------- other TRL options


@pytest.mark.parametrize("flags, message", [
    (["--dataset_config", "en"], "--dataset_config 'en' is not supported"),
    (["--dataset_streaming"], "--dataset_streaming is not supported"),
    (["--ignore_bias_buffers"], "--ignore_bias_buffers is not supported"),
])
def test_unsupported_trl_options_are_refused(flags, message, tiny_qwen_dir, single_file, tmp_path, capsys):
    assert main(_sft_args(tiny_qwen_dir, single_file, tmp_path / "run", *flags)) == 2
    assert f"scale-vlm sft: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_model_revision_reaches_the_processor(tiny_qwen_dir, single_file, tmp_path, monkeypatch, capsys):
    import scale_vlm.processors

    seen = {}

    def record(name, **kwargs):
        seen.update(kwargs)
        raise ValueError("processor loading stopped by the test")

    monkeypatch.setattr(scale_vlm.processors, "load_processor", record)
    assert main(_sft_args(tiny_qwen_dir, single_file, tmp_path / "run", "--model_revision", "v2")) == 2
    assert "stopped by the test" in capsys.readouterr().err
    assert seen.get("revision") == "v2"
