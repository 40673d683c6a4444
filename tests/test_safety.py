"""Safe loading: no remote code unless asked, safetensors only, no pickle from data, no silent overwrite."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from reliability_support import REPO_ROOT, tiny_model_dir

PACKAGE = REPO_ROOT / "scale_vlm"


def test_trust_remote_code_is_off_by_default():
    from scale_vlm.eval.evaluate import EvalConfig
    from scale_vlm.processors import load_processor
    from scale_vlm.sft_config import ScaleSFTConfig

    assert ScaleSFTConfig(output_dir="x").trust_remote_code is False
    assert {f.name: f.default for f in dataclasses.fields(EvalConfig)}["trust_remote_code"] is False
    assert inspect.signature(load_processor).parameters["trust_remote_code"].default is False
    # every function of the package that takes the flag defaults it to False
    import importlib
    import pkgutil

    import scale_vlm

    for info in pkgutil.walk_packages(scale_vlm.__path__, "scale_vlm."):
        if info.name.startswith("scale_vlm.cli") or "vllm" in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except (ImportError, SystemExit):  # optional extras (e.g. vllm) that are not installed
            continue
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == info.name:
                param = inspect.signature(obj).parameters.get("trust_remote_code")
                if param is not None:
                    assert param.default is False, f"{info.name}.{name}"


def test_source_never_enables_remote_code_or_unsafe_loads():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO_ROOT)
        if re.search(r"trust_remote_code\s*=\s*True", text):
            problems.append(f"{rel}: trust_remote_code=True")
        if re.search(r"\bpickle\.loads?\(|\bcPickle\b|\bdill\.load|\bjoblib\.load", text):
            problems.append(f"{rel}: pickle load")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                problems.append(f"{rel}: torch.load without weights_only=True")
        if re.search(r"allow_pickle\s*=\s*True", text):
            problems.append(f"{rel}: numpy allow_pickle=True")
        if re.search(r"safe_serialization\s*=\s*False", text):
            problems.append(f"{rel}: safe_serialization=False")
    assert not problems, "\n".join(problems)


def test_saved_weights_are_safetensors(tmp_path):
    from scale_vlm.tiny.model import save_tiny
    from scale_vlm.tiny.shipped import load_base

    model, processor = load_base(tiny_model_dir())
    out = save_tiny(model, processor, tmp_path / "saved")
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]


def test_sft_cli_refuses_a_folder_holding_another_run(tmp_path, capsys):
    from scale_vlm.cli import sft
    from scale_vlm.sft_config import ScaleSFTConfig

    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    kept = (out / "checkpoint-2" / "trainer_state.json").read_text()
    with pytest.raises(SystemExit, match="already holds a run.*--resume_from_checkpoint.*--overwrite_output_dir"):
        sft.check_output_dir(ScaleSFTConfig(output_dir=str(out)))
    # resuming or an explicit overwrite flag is allowed
    sft.check_output_dir(ScaleSFTConfig(output_dir=str(out), resume_from_checkpoint="true"))
    sft.check_output_dir(ScaleSFTConfig(output_dir=str(out), overwrite_output_dir=True))
    # a finished run (weights + config, no checkpoint folder) is protected too
    done = tmp_path / "done"
    done.mkdir()
    (done / "model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit):
        sft.check_output_dir(ScaleSFTConfig(output_dir=str(done)))
    # an empty or unrelated folder is fine, and nothing was deleted
    (tmp_path / "empty").mkdir()
    sft.check_output_dir(ScaleSFTConfig(output_dir=str(tmp_path / "empty")))
    assert (out / "checkpoint-2" / "trainer_state.json").read_text() == kept


def test_sft_cli_main_refuses_before_loading_anything(tmp_path, capsys):
    from scale_vlm.cli import main

    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    # the missing model and data are not reached: the occupied output folder is reported first
    assert main(["sft", "--model_name_or_path", str(tmp_path / "no-such-model"), "--dataset_name",
                 str(tmp_path / "no-such.jsonl"), "--output_dir", str(out), "--use_cpu", "true"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "not found" not in err
    assert (out / "checkpoint-4").is_dir()


def test_eval_refuses_to_overwrite_results(tmp_path):
    from scale_vlm.eval.evaluate import write_results

    write_results(tmp_path, {"accuracy": 1.0}, [])
    with pytest.raises(FileExistsError, match=r"already holds a run of scale-vlm eval \(metrics.json.*--overwrite_output_dir"):
        write_results(tmp_path, {"accuracy": 0.0}, [])
    assert '"accuracy": 1.0' in Path(tmp_path / "metrics.json").read_text()
