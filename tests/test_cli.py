"""The command line: help texts, a short sft run, inspect-data output, shipped configs."""

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import messages_row

from scale_vlm.cli import COMMANDS, main

PACKAGE_CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "scale_vlm", "configs", "*.yaml")))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_works(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: " in capsys.readouterr().out


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "scale_vlm.cli", "sft", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: scale-vlm sft" in out.stdout and "--think_weight_start" in out.stdout


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in COMMANDS)
    assert main(["nope"]) == 2


def _write_jsonl(tmp_path, n=8):
    rows = []
    for i in range(n):
        row = messages_row(i)
        row["images"][0].save(tmp_path / f"img{i}.png")
        row["images"] = [f"img{i}.png"]
        rows.append(row)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_sft_run_writes_state_model_and_config(tiny_qwen_dir, tmp_path, capsys):
    data = _write_jsonl(tmp_path)
    out = tmp_path / "run"
    args = ["sft", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", data, "--output_dir", str(out),
            "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--use_cpu",
            "--save_strategy", "no", "--method", "scale", "--schedule", "linear"]
    assert main(args) == 0
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "scale_config.yaml", "data_report.json"} <= files
    assert not any(f.startswith("pytorch_model") for f in files)  # weights only as safetensors
    resolved = yaml.safe_load((out / "scale_config.yaml").read_text())
    assert resolved["method"] == "scale" and resolved["schedule"] == "linear" and resolved["max_steps"] == 3
    # the saved model loads back through the Auto classes
    from scale_vlm.tiny.shipped import load_base

    load_base(str(out))
    # a second run into the same folder is refused, as a one-line error (exit status 2, no traceback)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "scale-vlm sft: error: --output_dir" in err and "already holds a run of scale-vlm sft" in err
    assert "Traceback" not in err


def test_sft_checkpoint_state_has_the_four_metrics(tiny_qwen_dir, tmp_path):
    data = _write_jsonl(tmp_path)
    out = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": tiny_qwen_dir, "dataset_name": data, "output_dir": str(out), "max_steps": 3,
        "per_device_train_batch_size": 4, "use_cpu": True, "save_steps": 3, "method": "vanilla",
    }))
    assert main(["sft", "--config", str(config), "--learning_rate", "1e-3"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert len(logged) == 3
    for h in logged:
        assert {"loss_think", "loss_answer"} <= set(h)
        assert not {"w_think", "w_answer"} & set(h)  # vanilla uses no schedule weights, so it logs none
    assert state["log_history"][0]["learning_rate"] == pytest.approx(1e-3)


def test_inspect_data_json(tiny_qwen_dir, tmp_path, capsys):
    data = _write_jsonl(tmp_path, n=4)
    assert main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", data,
                 "--num_examples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    first = report["examples"][0]
    assert first["index"] == 0
    assert first["think_text"] + first["answer_text"] == (
        "<think>I look at the image. The square is red, option (A).</think><answer>(A)</answer><|im_end|>"
    )
    assert first["answer_text"].startswith("><answer>")
    assert report["summary"]["num_examples"] == 4
    ratio = report["summary"]["think_to_answer_ratio"]
    assert ratio == pytest.approx(report["summary"]["mean_think_tokens"] / report["summary"]["mean_answer_tokens"])


def test_inspect_data_human_view(tiny_qwen_dir, tmp_path, capsys):
    data = _write_jsonl(tmp_path, n=2)
    assert main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", data]) == 0
    text = capsys.readouterr().out
    assert "=== example 0:" in text and " think " in text and " answer " in text and "summary over 2 examples" in text


@pytest.mark.parametrize("path", PACKAGE_CONFIGS, ids=os.path.basename)
def test_every_shipped_config_loads(path):
    from trl import ModelConfig, TrlParser

    from scale_vlm.cli.sft import SFTScriptArguments
    from scale_vlm.sft_config import ScaleSFTConfig

    script, train, model = TrlParser((SFTScriptArguments, ScaleSFTConfig, ModelConfig)).parse_args_and_config(
        ["--config", path, "--use_cpu", "--bf16", "false"])
    raw = yaml.safe_load(open(path))
    assert train.method == raw["method"] and model.model_name_or_path == raw["model_name_or_path"]
    assert train.trust_remote_code is False


def test_shipped_configs_exist():
    assert len(PACKAGE_CONFIGS) >= 3
