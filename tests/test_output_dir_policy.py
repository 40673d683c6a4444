"""The one output-folder rule (``scale_vlm.run_guard``) in every command that writes a run: sft, eval, grpo, demo,
build-base and make-data. A folder holding a previous run of the command is refused without --overwrite_output_dir
(the error names a file found); with it, that run's files are moved into ``previous-run-<time>/`` (never deleted)
and every other file stays. No training: the commands' own checks, or their main with the slow part replaced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scale_vlm import run_guard
from scale_vlm.cli import main
from scale_vlm.run_guard import PreviousRunError, RunFiles


def _occupy(folder: Path, names: dict[str, str]) -> Path:
    """Write ``names`` (relative path -> text) into ``folder``, plus an unrelated notes.txt."""
    for name, text in {**names, "notes.txt": "mine"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _assert_moved(folder: Path, names: dict[str, str], err: str, command: str) -> Path:
    """Every one of ``names`` is now in the one previous-run-* folder with its content, not in ``folder``; the
    unrelated notes.txt stayed; the move was said in one stderr line."""
    (aside,) = folder.glob("previous-run-*")
    assert re.fullmatch(r"previous-run-\d{8}-\d{6}", aside.name)
    for name, text in names.items():
        assert (aside / name).read_text() == text
        assert not (folder / name).exists() or (folder / name).read_text() != text  # gone, or this run's own
    assert (folder / "notes.txt").read_text() == "mine"
    lines = [line for line in err.splitlines() if "moved the previous run's" in line]
    assert len(lines) == 1 and lines[0].startswith(f"scale-vlm {command}: --overwrite_output_dir: ")
    assert str(aside) in lines[0]
    return aside


def _user_error(capsys, rc: int, command: str, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"scale-vlm {command}: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ------------------------------------------------------------------------------------------- the rule itself

RUN = RunFiles("x", markers=("checkpoint-*", "model.safetensors"), companions=("config.json",),
               resume="resume it with --resume_from_checkpoint true")


def test_refusal_names_the_folder_the_files_and_the_three_ways_out(tmp_path):
    _occupy(tmp_path, {"checkpoint-1/a": "1", "checkpoint-2/a": "2", "checkpoint-3/a": "3", "model.safetensors": "w"})
    with pytest.raises(PreviousRunError) as info:
        run_guard.check_output_dir(tmp_path, RUN, overwrite=False)
    assert isinstance(info.value, FileExistsError)  # the CLI's user-error style, for every command
    assert str(info.value) == (
        f"scale-vlm x: --output_dir {str(tmp_path)!r} already holds a run of scale-vlm x (checkpoint-1, "
        "checkpoint-2, checkpoint-3 and 1 more). Resume it with --resume_from_checkpoint true, choose another "
        f"--output_dir, or pass --overwrite_output_dir to move that run's files into {tmp_path}/previous-run-<time>/ "
        "(nothing is deleted).")
    # a command that cannot resume offers the two other ways
    no_resume = RunFiles("y", markers=("model.safetensors",))
    with pytest.raises(PreviousRunError, match=r"\(model.safetensors\)\. Choose another --output_dir, or pass"):
        run_guard.check_output_dir(tmp_path, no_resume, overwrite=False)
    # resuming or overwriting passes the check, and the check alone moves nothing
    assert run_guard.check_output_dir(tmp_path, RUN, overwrite=False, resuming=True)[0] == "checkpoint-1"
    run_guard.check_output_dir(tmp_path, RUN, overwrite=True)
    assert (tmp_path / "model.safetensors").read_text() == "w" and not list(tmp_path.glob("previous-run-*"))


def test_only_markers_make_a_previous_run(tmp_path):
    # unrelated files, a companion alone (a config.json may be the user's) and earlier previous-run folders: no run
    _occupy(tmp_path, {"config.json": "{}", "previous-run-20240101-000000/model.safetensors": "old"})
    assert run_guard.check_output_dir(tmp_path, RUN, overwrite=False) == []
    assert run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True) is None
    assert (tmp_path / "config.json").read_text() == "{}"
    assert run_guard.check_output_dir(tmp_path / "missing", RUN, overwrite=False) == []


def test_move_takes_markers_and_companions_and_leaves_the_rest(tmp_path, capsys):
    names = {"checkpoint-2/trainer_state.json": "{}", "model.safetensors": "w", "config.json": "{}"}
    _occupy(tmp_path, names)
    aside = run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True)
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-2", "config.json", "model.safetensors"]
    err = capsys.readouterr().err
    _assert_moved(tmp_path, names, err, "x")
    # markers first, then the companions
    assert f"moved the previous run's checkpoint-2, model.safetensors, config.json to {aside} (delete" in err


def test_move_never_reuses_a_previous_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_guard.time, "strftime", lambda fmt: fmt.replace("%Y%m%d-%H%M%S", "20250102-030405"))
    folders = []
    for content in ("first", "second", "third"):
        _occupy(tmp_path, {"model.safetensors": content})
        folders.append(run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True))
    assert [f.name for f in folders] == ["previous-run-20250102-030405", "previous-run-20250102-030405-2",
                                         "previous-run-20250102-030405-3"]
    assert [(f / "model.safetensors").read_text() for f in folders] == ["first", "second", "third"]


@pytest.mark.parametrize("env", [{"RANK": "1"}, {"LOCAL_RANK": "2"}])
def test_only_the_main_process_moves(tmp_path, monkeypatch, env):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _occupy(tmp_path, {"model.safetensors": "w"})
    assert run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True) is None
    assert (tmp_path / "model.safetensors").read_text() == "w"
    monkeypatch.setenv("RANK", "0")
    assert run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True) is not None


def test_resuming_never_moves(tmp_path):
    _occupy(tmp_path, {"model.safetensors": "w"})
    assert run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=True, resuming=True) is None
    assert run_guard.move_previous_run_aside(tmp_path, RUN, overwrite=False) is None
    assert (tmp_path / "model.safetensors").read_text() == "w"


def test_an_input_inside_the_previous_run_is_not_moved_away(tmp_path):
    _occupy(tmp_path, {"checkpoint-2/model.safetensors": "w"})
    for model in (str(tmp_path), str(tmp_path / "checkpoint-2")):
        with pytest.raises(ValueError, match=r"--model_name_or_path .* is read from --output_dir .*choose another"):
            run_guard.check_output_dir(tmp_path, RUN, overwrite=True, inputs={"--model_name_or_path": model})
    # a model elsewhere, or a folder beside the run's files, is fine
    run_guard.check_output_dir(tmp_path, RUN, overwrite=True, inputs={"--model_name_or_path": str(tmp_path / "m")})
    run_guard.check_output_dir(tmp_path, RUN, overwrite=True, inputs={"--model_name_or_path": None})


# ------------------------------------------------------------------------------------------- sft

SFT_FILES = {"checkpoint-2/trainer_state.json": '{"global_step": 2}', "model.safetensors": "old weights",
             "scale_config.yaml": "method: scale\n", "data_report.json": "{}", "config.json": '{"old": 1}',
             "README.md": "old card"}


def test_sft_refuses_and_moves_the_previous_run(tmp_path, capsys):
    from scale_vlm.cli import sft
    from scale_vlm.sft_config import ScaleSFTConfig

    out = _occupy(tmp_path / "run", SFT_FILES)
    with pytest.raises(SystemExit, match=r"already holds a run of scale-vlm sft \(checkpoint-2, data_report.json, "
                                         r"model.safetensors and 1 more\)"):
        sft.check_output_dir(ScaleSFTConfig(output_dir=str(out)))
    # resuming: allowed, and nothing moves
    resume = ScaleSFTConfig(output_dir=str(out), resume_from_checkpoint="true")
    sft.check_output_dir(resume)
    assert sft.move_previous_run_aside(resume) is None and (out / "model.safetensors").is_file()
    # "false" is no resume
    with pytest.raises(SystemExit):
        sft.check_output_dir(ScaleSFTConfig(output_dir=str(out), resume_from_checkpoint="false"))
    args = ScaleSFTConfig(output_dir=str(out), overwrite_output_dir=True)
    sft.check_output_dir(args)
    aside = sft.move_previous_run_aside(args)
    _assert_moved(out, SFT_FILES, capsys.readouterr().err, "sft")
    assert Path(aside) == next(out.glob("previous-run-*"))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", Path(aside).name]


def test_sft_overwrite_does_not_move_the_model_it_trains(tmp_path):
    from scale_vlm.cli import sft
    from scale_vlm.sft_config import ScaleSFTConfig

    out = _occupy(tmp_path / "run", SFT_FILES)
    with pytest.raises(ValueError, match="--model_name_or_path .* is read from --output_dir"):
        sft.check_output_dir(ScaleSFTConfig(output_dir=str(out), overwrite_output_dir=True), model=str(out))


def test_sft_cli_refusal_is_one_error_line(tmp_path, capsys):
    out = _occupy(tmp_path / "run", SFT_FILES)
    rc = main(["sft", "--model_name_or_path", str(tmp_path / "no-model"), "--dataset_name", str(tmp_path / "d.jsonl"),
               "--output_dir", str(out), "--use_cpu", "true"])
    _user_error(capsys, rc, "sft", f"--output_dir {str(out)!r} already holds a run of scale-vlm sft (checkpoint-2",
                "--resume_from_checkpoint true", "--overwrite_output_dir")


# ------------------------------------------------------------------------------------------- eval

EVAL_FILES = {"predictions.jsonl": '{"id": "old"}\n', "metrics.json": '{"accuracy": 0.25}'}


def test_eval_refuses_and_moves_the_previous_results(tiny_qwen_dir, tmp_path, capsys):
    out = _occupy(tmp_path / "eval", EVAL_FILES)
    argv = ["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "builtin", "--builtin_size", "2",
            "--max_new_tokens", "2", "--output_dir", str(out), "--progress", "false", "--device", "cpu"]
    _user_error(capsys, main(argv), "eval", "already holds a run of scale-vlm eval (metrics.json, predictions.jsonl)",
                "--overwrite_output_dir")
    assert (out / "metrics.json").read_text() == EVAL_FILES["metrics.json"]
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0
    _assert_moved(out, EVAL_FILES, capsys.readouterr().err, "eval")
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 2  # this run's results


def test_eval_write_results_refuses_without_overwrite(tmp_path):
    from scale_vlm.eval.evaluate import write_results

    _occupy(tmp_path, EVAL_FILES)
    with pytest.raises(FileExistsError, match=r"already holds a run of scale-vlm eval \(metrics.json"):
        write_results(tmp_path, {"accuracy": 1.0}, [])
    assert (tmp_path / "metrics.json").read_text() == EVAL_FILES["metrics.json"]


# ------------------------------------------------------------------------------------------- grpo

GRPO_FILES = {"model.safetensors": "old weights", "log_history.json": "[]", "prompt_form.json": "{}",
              "checkpoint-4/trainer_state.json": "{}", "config.json": '{"old": 1}'}


def _grpo(out: Path, model: Path, overwrite: bool):
    from scale_vlm.cli.grpo import GRPOScriptArguments, run
    from scale_vlm.grpo_config import ScaleGRPOConfig

    args = ScaleGRPOConfig(output_dir=str(out), use_cpu=True, overwrite_output_dir=overwrite, report_to="none")
    return run(GRPOScriptArguments(model_name_or_path=str(model)), args)


class _Stop(Exception):
    pass


def test_grpo_refuses_and_moves_the_previous_run(tmp_path, monkeypatch, capsys):
    import scale_vlm.grpo_trainer

    out = _occupy(tmp_path / "grpo", GRPO_FILES)
    model = tmp_path / "sft-model"
    model.mkdir()
    with pytest.raises(FileExistsError, match=r"already holds a run of scale-vlm grpo \(checkpoint-4, "
                                              r"log_history.json, model.safetensors and 1 more\)\. Resume it with "
                                              r"--resume_from_checkpoint true, choose another"):
        _grpo(out, model, overwrite=False)
    assert (out / "model.safetensors").read_text() == "old weights"

    # with the flag the previous run is moved aside before the data (and then the model) are loaded
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(scale_vlm.grpo_trainer, "load_grpo_dataset", stop)
    with pytest.raises(_Stop):
        _grpo(out, model, overwrite=True)
    _assert_moved(out, GRPO_FILES, capsys.readouterr().err, "grpo")
    # the SFT model it starts from is never moved away
    with pytest.raises(ValueError, match="--model_name_or_path .* is read from --output_dir"):
        _grpo(_occupy(model, {"model.safetensors": "sft weights"}), model, overwrite=True)


def test_grpo_writes_into_a_folder_without_a_run(tmp_path, monkeypatch):
    import scale_vlm.grpo_trainer

    out = _occupy(tmp_path / "grpo", {})
    monkeypatch.setattr(scale_vlm.grpo_trainer, "load_grpo_dataset", lambda *a, **k: (_ for _ in ()).throw(_Stop))
    with pytest.raises(_Stop):  # past the output-folder check: notes.txt alone is no previous run
        _grpo(out, tmp_path, overwrite=False)


# ------------------------------------------------------------------------------------------- demo

DEMO_FILES = {"results.json": '{"old": 1}', "results.md": "old", "training_curves.png": "png",
              "vanilla/model.safetensors": "v", "scale/model.safetensors": "s"}


def test_demo_refuses_and_moves_the_previous_run(tmp_path, capsys):
    from scale_vlm.demo import DemoConfig, _check_output_dir

    out = _occupy(tmp_path / "demo", {**DEMO_FILES, "base/model.safetensors": "cache"})
    with pytest.raises(FileExistsError, match=r"already holds a run of scale-vlm demo \(results.json, results.md, "
                                              r"scale and 2 more\)"):
        _check_output_dir(DemoConfig(output_dir=str(out)))
    assert _check_output_dir(DemoConfig(output_dir=str(out), overwrite_output_dir=True)) == out
    _assert_moved(out, DEMO_FILES, capsys.readouterr().err, "demo")
    assert (out / "base" / "model.safetensors").read_text() == "cache"  # the built base is a cache: kept


# ------------------------------------------------------------------------------------------- build-base

BASE_FILES = {"model.safetensors": "old weights", "perception.json": '{"old": 1}', "config.json": '{"old": 1}',
              "tokenizer.json": "{}"}


def test_build_base_refuses_and_moves_the_previous_build(tmp_path, monkeypatch, capsys):
    from scale_vlm.cli import build_base

    out = _occupy(tmp_path / "base", BASE_FILES)
    trained = []
    info = {"log": [], "train_seconds": 0, "prep_seconds": 0}
    monkeypatch.setattr(build_base, "train_base", lambda cfg: trained.append(cfg) or (None, None, info))
    monkeypatch.setattr(build_base, "save_base", lambda m, p, path: (Path(path) / "model.safetensors").write_text("new"))
    monkeypatch.setattr(build_base, "load_base", lambda path: (None, None))
    monkeypatch.setattr(build_base, "perception_report", lambda *a, **k: {"objects": 1.0})
    rc = main(["build-base", "--output_dir", str(out)])
    _user_error(capsys, rc, "build-base", "already holds a run of scale-vlm build-base (model.safetensors, "
                "perception.json)", "--overwrite_output_dir")
    assert not trained  # refused before the training
    assert main(["build-base", "--output_dir", str(out), "--overwrite_output_dir", "true"]) == 0
    _assert_moved(out, BASE_FILES, capsys.readouterr().err, "build-base")
    assert (out / "model.safetensors").read_text() == "new" and len(trained) == 1


# ------------------------------------------------------------------------------------------- make-data

DATA_FILES = {"train.jsonl": '{"id": "old"}\n', "test.jsonl": '{"id": "old"}\n', "images/old.png": "png"}


def test_make_data_refuses_and_moves_the_previous_run(tmp_path, capsys):
    out = _occupy(tmp_path / "data", DATA_FILES)
    argv = ["make-data", "--output_dir", str(out), "--num_examples", "2", "--num_test", "1"]
    _user_error(capsys, main(argv), "make-data", "already holds a run of scale-vlm make-data (images, test.jsonl, "
                "train.jsonl)", "--overwrite_output_dir")
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0
    _assert_moved(out, DATA_FILES, capsys.readouterr().err, "make-data")
    assert len((out / "train.jsonl").read_text().splitlines()) == 2 and not (out / "images" / "old.png").exists()


def test_make_data_writes_into_a_folder_without_a_run(tmp_path):
    out = _occupy(tmp_path / "data", {})
    assert main(["make-data", "--output_dir", str(out), "--num_examples", "2", "--num_test", "0"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "train.jsonl").is_file()
    assert not list(out.glob("previous-run-*"))
