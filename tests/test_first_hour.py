"""A new user's first hour (issue "no lost work, no silent wrong result, errors a person can read").

Each test replays what the user did (the ``scale-vlm`` entry point, in process, or the Python API) and checks the
behaviour asked for: stale checkpoints are never resumed, an unwritable output folder is found before training,
ambiguous evaluation golds are refused, every command reports mistakes as ``scale-vlm CMD: error: ...`` with exit
status 2 and no traceback, missing local paths fail at once, JSON shapes are read as written, GRPO reads the user's
data, no-op settings are refused, the demo and logs say what they do, every command reads data through one loader
(a hub snapshot folder included) and takes the same option names.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from reliability_support import good_row, write_good_jsonl, write_jsonl

from scale_vlm.cli import main

# Short CLI runs on the tiny model: about 1-2 s each on one core.
TRAIN = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--save_steps", "2", "--use_cpu", "true",
         "--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


def _sft(model, data, out, *extra):
    return main(["sft", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
                 *TRAIN, *extra])


def _data(folder, n=8, think="I look at the grid"):
    """A good JSONL file; ``think`` changes the text, so two calls give two different data sets."""
    path = write_good_jsonl(folder, n)
    path.write_text(path.read_text().replace("I look at the grid", think))
    return path


def _assert_user_error(capsys, rc, *fragments, command="sft"):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"scale-vlm {command}: error: " in err, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ------------------------------------------------------------------------ 1. a stale run is never resumed


def test_overwrite_moves_old_checkpoints_aside_so_resume_cannot_take_them(tiny_qwen_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _sft(tiny_qwen_dir, _data(tmp_path / "a"), out) == 0
    assert (out / "checkpoint-2").is_dir()
    capsys.readouterr()
    # the user starts over on other data, without checkpoints this time ...
    assert _sft(tiny_qwen_dir, _data(tmp_path / "b", think="Other data"), out, "--overwrite_output_dir", "true",
                "--save_strategy", "no") == 0
    err = capsys.readouterr().err
    assert "moved the previous run's checkpoint-2" in err and "previous-run-" in err
    assert not list(out.glob("checkpoint-*"))
    (aside,) = out.glob("previous-run-*")
    assert (aside / "checkpoint-2" / "trainer_state.json").is_file()  # moved, not deleted
    # the whole previous model went with it (weights, config, processor), so the folder aside still loads
    assert {"model.safetensors", "config.json", "tokenizer.json", "scale_config.yaml"} <= {p.name for p in aside.iterdir()}
    # ... and --resume_from_checkpoint true finds nothing of the old run to continue
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "b", think="Other data"), out, "--resume_from_checkpoint", "true")
    _assert_user_error(capsys, rc, "no complete checkpoint to resume from")


def test_resume_refuses_a_checkpoint_of_other_data_or_settings(tiny_qwen_dir, tmp_path, capsys):
    out = tmp_path / "run"
    data_a = _data(tmp_path / "a")
    assert _sft(tiny_qwen_dir, data_a, out) == 0
    assert json.loads((out / "checkpoint-2" / "scale_run.json").read_text())["num_examples"] == 8
    capsys.readouterr()
    data_b = _data(tmp_path / "b", think="Other data")
    rc = _sft(tiny_qwen_dir, data_b, out, "--resume_from_checkpoint", "true")
    _assert_user_error(capsys, rc, "refusing to resume from", "checkpoint-2", "the training data differ")
    rc = _sft(tiny_qwen_dir, data_a, out, "--resume_from_checkpoint", "true", "--learning_rate", "0.5")
    _assert_user_error(capsys, rc, "learning_rate is 2e-05 in the checkpoint but 0.5 now")
    rc = _sft(tiny_qwen_dir, data_a, out, "--resume_from_checkpoint", "true", "--method", "vanilla")
    _assert_user_error(capsys, rc, "method is 'scale' in the checkpoint but 'vanilla' now")
    # the same data and settings resume (the fingerprint is not a false alarm)
    assert _sft(tiny_qwen_dir, data_a, out, "--resume_from_checkpoint", "true") == 0


def test_api_resume_true_refuses_a_stale_checkpoint(tiny_qwen_dir, tmp_path):
    """``trainer.train(resume_from_checkpoint=True)`` (Trainer's own newest-checkpoint lookup) is checked too."""
    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.run_guard import StaleCheckpointError
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    def trainer(data, **kw):
        ds, root = load_training_dataset(str(data))
        args = ScaleSFTConfig(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
                              save_steps=2, use_cpu=True, disable_tqdm=True, report_to="none", image_root=root, **kw)
        model, processor = load_base(tiny_qwen_dir)
        return ScaleSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)

    trainer(_data(tmp_path / "a")).train()
    with pytest.raises(StaleCheckpointError, match=r"checkpoint-2: it was written by a different run: the training"):
        trainer(_data(tmp_path / "b", think="Other data")).train(resume_from_checkpoint=True)


def test_a_crash_after_the_step_state_still_leaves_a_checked_checkpoint(tiny_qwen_dir, tmp_path, capsys):
    """The fingerprint travels inside trainer_state.json, the file that marks a checkpoint complete: a crash while
    scale_run.json was being written (simulated: empty) or before it (absent) still resumes, checked. Before, the
    half-written file failed the resume with a bare 'Expecting value: line 1 column 1'."""
    out, data_a = tmp_path / "run", _data(tmp_path / "a")
    assert _sft(tiny_qwen_dir, data_a, out) == 0
    checkpoint = out / "checkpoint-2"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    embedded = state["stateful_callbacks"]["WriteRunFingerprint"]["args"]["fingerprint"]
    assert embedded == json.loads((checkpoint / "scale_run.json").read_text()) and embedded["num_examples"] == 8
    (checkpoint / "scale_run.json").write_text("")  # cut short by the crash
    capsys.readouterr()
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "b", think="Other data"), out, "--resume_from_checkpoint", "true")
    _assert_user_error(capsys, rc, "refusing to resume from", "checkpoint-2", "the training data differ")
    (checkpoint / "scale_run.json").unlink()  # the crash came before it
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "b", think="Other data"), out, "--resume_from_checkpoint", "true")
    _assert_user_error(capsys, rc, "refusing to resume from", "the training data differ")
    assert _sft(tiny_qwen_dir, data_a, out, "--resume_from_checkpoint", "true") == 0


# ------------------------------------------------------------------------ 2. no work lost at save time


def test_unwritable_output_dir_is_refused_before_training(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    import transformers

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")

    def no_model_load(*a, **kw):
        raise AssertionError("the model was loaded: the output folder was not checked before training")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", no_model_load)
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "a"), blocker / "run")
    _assert_user_error(capsys, rc, "cannot write to output_dir", str(blocker / "run"))


def test_eval_and_grpo_check_their_output_dir_before_loading_the_model(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    import transformers

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the output folder was checked"))
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "builtin", "--limit", "2", "--output_dir",
               str(blocker / "eval")])
    _assert_user_error(capsys, rc, "cannot write to output_dir", command="eval")
    rc = main(["grpo", "--model_name_or_path", tiny_qwen_dir, "--output_dir", str(blocker / "grpo"), "--max_steps",
               "1", "--builtin_size", "2", "--use_cpu", "true"])
    _assert_user_error(capsys, rc, "cannot write to output_dir", command="grpo")


def test_api_trainer_checks_output_dir_before_preparing_data(tmp_path, messages_dataset, fresh_qwen):
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer

    (tmp_path / "a_file").write_text("x")
    model, processor = fresh_qwen
    args = ScaleSFTConfig(output_dir=str(tmp_path / "a_file" / "run"), max_steps=1, use_cpu=True, report_to="none")
    with pytest.raises(PermissionError, match="cannot write to output_dir"):
        ScaleSFTTrainer(model=model, args=args, train_dataset=messages_dataset, processing_class=processor)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_dir_is_refused(tmp_path):
    from scale_vlm.run_guard import check_output_writable

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write to output_dir"):
            check_output_writable(ro / "run")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------ 3. eval never scores against a guessed gold


def _ambiguous_eval_file(folder):
    """The user's file: integer answers with numeric choices ("answer": 3 could mean choices[3] == "4" or "3")."""
    from reliability_support import colour_image

    folder.mkdir(parents=True, exist_ok=True)
    colour_image(0).save(folder / "q.png")
    rows = [{"image": "q.png", "question": "How many shapes?", "answer": 3, "choices": ["1", "2", "3", "4"]}]
    return write_jsonl(folder / "test.jsonl", rows)


def test_eval_refuses_an_answer_that_could_be_an_index_or_a_value(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the data was checked"))
    data = _ambiguous_eval_file(tmp_path / "d")
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--choices_column", "choices",
               "--output_dir", str(tmp_path / "o")])
    _assert_user_error(capsys, rc, "example 0: answer 3 is ambiguous", "(D) '4'", "(C) '3'",
                       "--answer_format index or --answer_format text", command="eval")


def test_eval_answer_format_chooses_the_gold(tiny_qwen_dir, tmp_path):
    from scale_vlm.eval.adapters import ColumnMapping, load_eval_dataset

    data = _ambiguous_eval_file(tmp_path / "d")
    out = tmp_path / "o"
    assert main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--choices_column", "choices",
                 "--answer_format", "text", "--output_dir", str(out), "--max_new_tokens", "4", "--progress",
                 "false"]) == 0
    (prediction,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert prediction["gold"] == "C"  # the value 3, not choices[3]
    mapping = ColumnMapping(choices_column="choices")
    assert load_eval_dataset(str(data), columns=mapping, answer_format="index")[0].gold == "D"
    # an integer that can only be an index (no choice has its text) stays an index under auto
    rows = [{"image": None, "question": "q", "answer": 1, "choices": ["red", "blue"]}]
    path = write_jsonl(tmp_path / "colours.jsonl", rows)
    assert load_eval_dataset(str(path), columns=mapping)[0].gold == "B"


# ------------------------------------------------------------------------ 4. one error style for every command


def _bad_example_file(folder):
    path = write_good_jsonl(folder, 3)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("<think>", "")
    path.write_text("\n".join(lines) + "\n")
    return path


def _invalid_json_file(folder):
    path = write_good_jsonl(folder, 2)
    with open(path, "a") as f:
        f.write('{"messages": [oops\n')
    return path


ERROR_CASES = {
    "sft-bad-example": ("sft", lambda m, d: ["--model_name_or_path", m, "--dataset_name", str(_bad_example_file(d))],
                        ["example 1: missing tag '<think>'", "fix: ", "--bad_example_policy skip"]),
    "sft-bad-value": ("sft", lambda m, d: ["--model_name_or_path", m, "--dataset_name", "x.jsonl", "--method", "sacle"],
                      ["method must be one of ('scale', 'vanilla'), got 'sacle'"]),
    "sft-typo-flag": ("sft", lambda m, d: ["--model_name_or_path", m, "--lerning_rate", "1e-3"],
                      ["unknown option(s) --lerning_rate", "--learning_rate?", "scale-vlm sft --help"]),
    "sft-invalid-json": ("sft", lambda m, d: ["--model_name_or_path", m, "--dataset_name", str(_invalid_json_file(d))],
                         ["train.jsonl: line 3 is not valid JSON"]),
    "inspect-bad-example": ("inspect-data", lambda m, d: ["--model_name_or_path", m, "--dataset_name",
                                                          str(_bad_example_file(d))],
                            ["example 1: missing tag '<think>'", "--bad_example_policy skip"]),
    "inspect-typo-flag": ("inspect-data", lambda m, d: ["--model_name_or_path", m, "--dataset_name", "x.jsonl",
                                                        "--num_exampels", "2"], ["--num_exampels -> --num_examples"]),
    "plot-bad-schedule": ("plot-schedule", lambda m, d: ["--schedule", "cosin"], ["unknown schedule 'cosin'"]),
    "plot-bad-weight": ("plot-schedule", lambda m, d: ["--think_weight_start", "-1"], ["must be finite and >= 0"]),
    "demo-bad-schedule": ("demo", lambda m, d: ["--quick", "--schedule", "cosin", "--output_dir", str(d / "demo")],
                          ["unknown schedule 'cosin'"]),
    "make-data-bad-format": ("make-data", lambda m, d: ["--format", "csv", "--output_dir", str(d / "md")],
                             ["--format must be one of"]),
    "eval-typo-flag": ("eval", lambda m, d: ["--model_name_or_path", m, "--datset", "builtin"], ["--dataset_name?"]),
    # small runs, so that a regression fails fast instead of training a full model
    "grpo-bad-value": ("grpo", lambda m, d: ["--model_name_or_path", m, "--accuracy_weight", "-1", "--output_dir",
                                             str(d / "g"), "--max_steps", "1", "--builtin_size", "2",
                                             "--num_generations", "2", "--per_device_train_batch_size", "2",
                                             "--max_completion_length", "4", "--use_cpu", "true"],
                       ["accuracy_weight must be finite and >= 0"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_every_command_reports_mistakes_in_one_style(case, tiny_qwen_dir, tmp_path, capsys):
    command, make_args, fragments = ERROR_CASES[case]
    args = make_args(tiny_qwen_dir, tmp_path)
    if command == "sft":
        args += ["--output_dir", str(tmp_path / "out"), *TRAIN]
    rc = main([command, *args])
    _assert_user_error(capsys, rc, *fragments, command=command)
    assert not (tmp_path / "demo").exists()  # demo: refused in this process, before any worker or output


def test_traceback_flag_shows_the_trace(capsys):
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        main(["plot-schedule", "--schedule", "cosin", "--traceback"])
    with pytest.raises(ValueError, match="accuracy_weight must be"):
        main(["grpo", "--accuracy_weight", "-1", "--output_dir", "unused", "--traceback"])


# ------------------------------------------------------------------------ 5. a misspelt local path is "not found" at once


@pytest.fixture()
def no_hub(monkeypatch):
    """Any hub lookup fails the test (the user's misspelt path used to become ~36 s of retries)."""
    import datasets

    from scale_vlm.data import prepare

    def hub(*a, **k):
        raise AssertionError("a local-looking path went to the hub")

    monkeypatch.setattr(prepare, "load_dataset", hub)
    monkeypatch.setattr(datasets, "load_dataset", hub)


@pytest.mark.usefixtures("no_hub")
def test_misspelt_local_paths_are_not_found_at_once(tiny_qwen_dir, tmp_path, capsys):
    good = _data(tmp_path / "data")
    typo = tmp_path / "data" / "trian.jsonl"
    start = time.monotonic()
    rc = _sft(tiny_qwen_dir, typo, tmp_path / "out")
    _assert_user_error(capsys, rc, f"dataset '{typo}' not found", "check the path")
    rc = _sft(tmp_path / "modles" / "tiny", good, tmp_path / "out")
    _assert_user_error(capsys, rc, "model '", "modles/tiny' not found")
    rc = main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "data/trian.jsonl"])
    _assert_user_error(capsys, rc, "dataset 'data/trian.jsonl' not found", command="inspect-data")
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "./evl/test.jsonl", "--output_dir", str(tmp_path / "e")])
    _assert_user_error(capsys, rc, "dataset './evl/test.jsonl' not found", command="eval")
    rc = main(["eval", "--model_name_or_path", str(tmp_path / "runs" / "scale"), "--dataset_name", str(good), "--output_dir",
               str(tmp_path / "e")])
    _assert_user_error(capsys, rc, "runs/scale' not found", command="eval")
    rc = main(["grpo", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "./data/trian.jsonl", "--output_dir",
               str(tmp_path / "g"), "--max_steps", "1"])
    _assert_user_error(capsys, rc, "dataset './data/trian.jsonl' not found", command="grpo")
    assert time.monotonic() - start < 30  # each is refused before any model or data is loaded


def test_which_names_look_local(tmp_path, monkeypatch):
    from scale_vlm.run_guard import looks_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("data/train.jsonl", "./x", "../x", "/abs/x", "~/x", "a/b/c", "runs/scale", "train.parquet", "x\\y"):
        assert looks_local(name), name
    for name in ("Qwen/Qwen2.5-VL-3B-Instruct", "derek-thomas/ScienceQA", "builtin", "scienceqa", ""):
        assert not looks_local(name), name


# ------------------------------------------------------------------------ 6. JSON files are read as written


def _inspect_count(capsys, model, data, *extra):
    assert main(["inspect-data", "--model_name_or_path", model, "--dataset_name", str(data), "--json",
                 "--num_examples", "0", *extra]) == 0
    return json.loads(capsys.readouterr().out)["summary"]["num_examples"]


def test_a_json_file_holding_one_object_is_one_example(tiny_qwen_dir, tmp_path, capsys):
    write_good_jsonl(tmp_path, 1)  # writes the image
    one = tmp_path / "one.json"
    one.write_text(json.dumps(good_row(0, "images/good_0.png")))
    assert _inspect_count(capsys, tiny_qwen_dir, one) == 1


def test_json_splits_follow_the_split_option(tiny_qwen_dir, tmp_path, capsys):
    write_good_jsonl(tmp_path, 3)
    rows = [good_row(i, f"images/good_{i}.png") for i in range(3)]
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": rows[:2], "test": rows[2:]}))
    assert _inspect_count(capsys, tiny_qwen_dir, path) == 2
    assert _inspect_count(capsys, tiny_qwen_dir, path, "--dataset_train_split", "test") == 1
    rc = main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(path),
               "--dataset_train_split", "validation"])
    _assert_user_error(capsys, rc, "holds the splits ['train', 'test'] but not 'validation'", "--dataset_train_split",
                       command="inspect-data")
    # evaluation and GRPO read the same file by their --split
    from scale_vlm.eval.adapters import load_eval_dataset

    assert len(load_eval_dataset(str(path), split="test")) == 1


# ------------------------------------------------------------------------ 7. GRPO takes the user's data as it is


def test_grpo_trains_on_the_sft_data_file(tiny_qwen_dir, tmp_path):
    from scale_vlm.grpo_trainer import load_grpo_dataset

    data = write_good_jsonl(tmp_path / "d", 4)
    ds = load_grpo_dataset(str(data), "train")
    assert ds["answer"] == ["1", "2", "3", "4"]  # the gold is the answer block of each response
    assert ds[0]["prompt"][0]["content"][-1]["text"] == "How many shapes? (0)" and len(ds[0]["images"]) == 1
    sharegpt = write_jsonl(tmp_path / "d" / "sharegpt.jsonl", [{
        "conversations": [{"from": "human", "value": "<image>\nHow many shapes?"},
                          {"from": "gpt", "value": "<think>Two circles.</think><answer>2</answer>"}],
        "image": "images/good_0.png"}])
    row = load_grpo_dataset(str(sharegpt), "train")[0]
    assert (row["answer"], row["prompt"][0]["content"][-1]["text"], len(row["images"])) == ("2", "How many shapes?", 1)
    out = tmp_path / "grpo"
    assert main(["grpo", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--output_dir", str(out),
                 "--max_steps", "1", "--num_generations", "2", "--per_device_train_batch_size", "2",
                 "--max_completion_length", "4", "--use_cpu", "true", "--report_to", "none",
                 "--disable_tqdm", "true"]) == 0
    assert (out / "model.safetensors").is_file()
    history = json.loads((out / "log_history.json").read_text())
    step = next(h for h in history if "reward" in h)
    # the run's own model card, not TRL's generic one: the rewards with their weights, the logged reward
    card = (out / "README.md").read_text()
    assert "scale-vlm grpo" in card and "- grpo" in card and "1 x accuracy_reward + 0.5 x format_reward" in card
    assert f"`{data}`: 4 prompts" in card and "2 completions per prompt" in card and "1 optimizer steps" in card
    assert f"reward {step['reward']:.3f} -> {step['reward']:.3f}" in card
    assert "![reward curves](reward_curve.png)" in card and (out / "reward_curve.png").stat().st_size > 5_000


def _interrupt_grpo_at(patch, step: int) -> None:
    """Every ScaleGRPOTrainer the command builds raises KeyboardInterrupt (Ctrl-C) at the end of ``step``."""
    from transformers import TrainerCallback

    import scale_vlm.grpo_trainer as grpo_trainer

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt

    class Interrupted(grpo_trainer.ScaleGRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Interrupt())

    patch.setattr(grpo_trainer, "ScaleGRPOTrainer", Interrupted)


def test_grpo_resumes_from_its_last_checkpoint_from_the_command_line(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    """A GRPO run killed after its step-2 checkpoint: a plain restart is refused (it would start again from step 0),
    --resume_from_checkpoint true continues it to the steps and generated-token count of an uninterrupted run, and
    a checkpoint of other prompts or other settings is refused."""
    data = write_good_jsonl(tmp_path / "d", 4)
    other = tmp_path / "d" / "other.jsonl"  # the same rows (images, answers) but for their questions
    other.write_text(data.read_text().replace("How many shapes?", "Count the shapes."))

    def grpo(out, *extra, dataset=data):
        return main(["grpo", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(dataset), "--output_dir",
                     str(out), "--max_steps", "4", "--num_generations", "2", "--per_device_train_batch_size", "2",
                     "--max_completion_length", "6", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm",
                     "true", "--seed", "0", "--logging_steps", "1", "--save_steps", "2",
                     *extra])

    def rows(out):
        history = json.loads((out / "log_history.json").read_text())
        return {h["step"]: (h["generated_tokens"], h["completions/mean_length"]) for h in history if "reward" in h}

    assert grpo(tmp_path / "full") == 0
    capsys.readouterr()

    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _interrupt_grpo_at(patch, 3)
        assert grpo(cut) == 130
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-2"]
    capsys.readouterr()
    _assert_user_error(capsys, grpo(cut), "already holds a run of scale-vlm grpo", "checkpoint-2",
                       "Resume it with --resume_from_checkpoint true", command="grpo")
    _assert_user_error(capsys, grpo(cut, "--resume_from_checkpoint", "true", dataset=other), "refusing to resume from",
                       "checkpoint-2", "the training data differ", command="grpo")
    _assert_user_error(capsys, grpo(cut, "--resume_from_checkpoint", "true", "--temperature", "0.5"),
                       "temperature is 1.0 in the checkpoint but 0.5 now", command="grpo")
    assert grpo(cut, "--resume_from_checkpoint", "true") == 0
    assert f"scale-vlm grpo: resuming from {cut / 'checkpoint-2'} (step 2 of 4" in capsys.readouterr().err
    got, want = rows(cut), rows(tmp_path / "full")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    # the count grows with each step, so a count restarted at the checkpoint is short by its steps' tokens; the
    # exactness of the resumed steps themselves is tests/test_stage_resume.py's (a reward that moves the policy)
    assert want[4][0] > want[2][0] > 0
    assert got == want
    card = (cut / "README.md").read_text()
    assert "4 optimizer steps" in card


def test_grpo_greedy_probe_from_the_command_line(tiny_qwen_dir, tmp_path, capsys):
    """--probe_every N: greedy accuracy on the first --probe_limit questions before training, every N steps and
    after the last, in log_history.json and the run's summary line; a negative interval is refused first."""
    data = write_good_jsonl(tmp_path / "d", 4)
    common = ["grpo", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--max_steps", "3",
              "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "4",
              "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--probe_split", "train",
              "--probe_limit", "3", "--probe_max_new_tokens", "6"]
    rc = main([*common, "--output_dir", str(tmp_path / "bad"), "--probe_every", "-1"])
    _assert_user_error(capsys, rc, "--probe_every -1 --probe_limit 3: give a positive interval", command="grpo")
    assert main([*common, "--output_dir", str(tmp_path / "grpo"), "--probe_every", "2"]) == 0
    history = json.loads((tmp_path / "grpo" / "log_history.json").read_text())
    probes = [h for h in history if "probe/accuracy" in h]
    assert [h["step"] for h in probes] == [0, 2, 3] and all(h["probe/seconds"] > 0 for h in probes)
    # 6 new tokens cannot hold a think and an answer block: every probe answer runs out of its budget, and says so
    assert [h["probe/budget_hit_rate"] for h in probes] == [1.0, 1.0, 1.0]
    assert (f"greedy probe accuracy (3 questions of 'train'): step 0 {probes[0]['probe/accuracy']:.3f} -> step 3 "
            f"{probes[-1]['probe/accuracy']:.3f}, up to 1.000 of its answers cut off by the generation budget"
            ) in capsys.readouterr().out
    card = (tmp_path / "grpo" / "README.md").read_text()
    assert (f"| greedy probe | accuracy {probes[0]['probe/accuracy']:.3f} -> {probes[-1]['probe/accuracy']:.3f}, "
            f"malformed {probes[0]['probe/malformed_rate']:.3f} -> {probes[-1]['probe/malformed_rate']:.3f} (step 0 -> "
            "3, the first 3 questions of split 'train'") in card
    assert "greedy as scale-vlm eval scores them, up to 1.000 of its answers cut off by the generation budget)" in card


def test_grpo_column_mapping_flags(tmp_path):
    from reliability_support import colour_image
    from trl import TrlParser

    from scale_vlm.cli.grpo import GRPOScriptArguments
    from scale_vlm.grpo_config import ScaleGRPOConfig
    from scale_vlm.grpo_trainer import load_grpo_dataset

    colour_image(0).save(tmp_path / "a.png")
    rows = [{"pic": "a.png", "q": "Which colour?", "gold": 1, "opts": ["red", "blue"]}]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    script, _ = TrlParser((GRPOScriptArguments, ScaleGRPOConfig)).parse_args_and_config(
        ["--dataset_name", str(data), "--image_column", "pic", "--question_column", "q", "--answer_column", "gold",
         "--choices_column", "opts", "--answer_format", "index", "--output_dir", "unused", "--use_cpu", "true"])
    ds = load_grpo_dataset(script.dataset_name, script.dataset_train_split, columns=script.columns(),
                           answer_format=script.answer_format)
    assert ds["answer"] == ["B"] and ds["choices"] == [["red", "blue"]] and len(ds[0]["images"]) == 1


# ------------------------------------------------------------------------ 8. settings that do nothing are refused


@pytest.mark.parametrize("extra, fragment", [
    (["--think_weight_start", "0", "--think_weight_end", "0", "--answer_weight_start", "0", "--answer_weight_end", "0"],
     "every schedule weight is 0"),
    (["--max_steps", "0"], "max_steps is 0, so no step would be trained"),
])
def test_sft_refuses_settings_that_train_nothing(extra, fragment, tiny_qwen_dir, tmp_path, capsys):
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "d"), tmp_path / "out", *extra)
    _assert_user_error(capsys, rc, fragment)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_grpo_refuses_negative_or_zero_reward_weights(capsys):
    for extra, fragment in ((["--format_weight", "-0.5"], "format_weight must be finite and >= 0"),
                            (["--accuracy_weight", "0", "--format_weight", "0"], "both 0"),
                            (["--max_steps", "0"], "max_steps is 0")):
        rc = main(["grpo", "--model_name_or_path", "m", "--output_dir", "unused", *extra])
        _assert_user_error(capsys, rc, fragment, command="grpo")


def test_demo_quick_keeps_explicit_options_and_says_what_it_set():
    from scale_vlm.demo import QUICK, DemoConfig

    cfg = DemoConfig(quick=True, max_steps=10, num_train=32, batch_size=4)
    assert (cfg.max_steps, cfg.num_train, cfg.batch_size) == (10, 32, 4)
    assert cfg.num_test == QUICK["num_test"] and cfg.quick_settings == {"num_test": 20, "max_new_tokens": 160}
    with pytest.raises(ValueError, match="--max_steps must be positive"):
        DemoConfig(max_steps=0)


# ------------------------------------------------------------------------ 9. the demo says what it did


def test_demo_asks_parallel_workers_to_label_their_lines(tmp_path, monkeypatch):
    """The parallel path of run_demo, with the process pool replaced by an in-process one (a spawned worker would
    not see the stub)."""
    import concurrent.futures
    import logging

    from scale_vlm import demo

    calls = []

    def fake(method, cfg, out, train_ds, base_dir, examples, label_lines=False):
        calls.append((method, label_lines))
        hist = [{"step": 1, "loss_think": 3.0, "loss_answer": 2.0, "w_think": 0.8, "w_answer": 0.2}]
        return {"accuracy": 0.0, "malformed_rate": 1.0, "mean_think_tokens": 0.0, "num_examples": 20,
                "train_seconds": 1.0}, hist

    class InProcessPool:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, *iterables):
            return map(fn, *iterables)

    monkeypatch.setattr(demo, "train_and_evaluate", fake)
    monkeypatch.setattr(demo, "available_cpus", lambda: 2)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", InProcessPool)
    level = logging.getLogger("scale_vlm").level
    try:
        demo.run_demo(demo.DemoConfig(quick=True, output_dir=str(tmp_path / "demo"), progress=False))
    finally:
        logging.getLogger("scale_vlm").setLevel(level)
    assert calls == [("vanilla", True), ("scale", True)]


def test_demo_labels_the_parallel_methods_lines():
    import io

    from scale_vlm.demo import _Labelled

    sink = io.StringIO()
    stream = _Labelled(sink, "[scale] ")
    stream.write("== scale: 6 steps ==\n{'loss': 1.0}\npart")
    stream.write("ial line\n\n")
    assert sink.getvalue() == "[scale] == scale: 6 steps ==\n[scale] {'loss': 1.0}\n[scale] partial line\n\n"


@pytest.mark.parametrize("from_the_cli", [True, False])
def test_demo_workers_print_package_warnings_as_the_command_does(from_the_cli, capfd):
    """A real spawned worker of the demo's pool: under the CLI (pipeline_logging ran) a warning logged while it
    trains reaches stderr as ``[METHOD] warning: ...``, as in the parent; it used to come out bare, through Python's
    last-resort handler. Without the CLI's handler the worker adds none."""
    import logging

    from scale_vlm.demo import method_pool
    from scale_vlm.log_output import label_warning_lines, pipeline_logging

    package = logging.getLogger("scale_vlm")
    level, handlers = package.level, list(package.handlers)
    try:
        # an earlier command in this process may have left its handler: start from none
        package.handlers[:] = [h for h in handlers if not getattr(h, "pipeline_handler", False)]
        if from_the_cli:
            pipeline_logging()
        with method_pool(1) as pool:
            pool.submit(label_warning_lines, "[scale] ").result()
            pool.submit(logging.getLogger("scale_vlm.demo").warning, "the generation budget is short").result()
    finally:
        package.handlers[:] = handlers
        package.setLevel(level)
    err = capfd.readouterr().err
    if from_the_cli:
        assert "[scale] warning: the generation budget is short\n" in err
    else:
        assert "the generation budget is short\n" in err and "warning: the generation" not in err


def test_demo_quick_run_explains_its_numbers_and_keeps_models(tmp_path, monkeypatch, capsys):
    """run_demo end to end, with the (slow) training and evaluation of each method replaced by a stub."""
    from scale_vlm import demo

    calls = []

    def fake(method, cfg, out, train_ds, base_dir, examples, label_lines=False):
        calls.append((method, label_lines))
        hist = [{"step": 1, "loss_think": 3.0, "loss_answer": 2.0, "w_think": 0.8, "w_answer": 0.2}]
        record = {"accuracy": 0.0, "malformed_rate": 1.0, "mean_think_tokens": 0.0, "num_examples": 20,
                  "train_seconds": 1.0}
        return record, hist

    import logging

    monkeypatch.setattr(demo, "train_and_evaluate", fake)
    monkeypatch.setattr(demo, "available_cpus", lambda: 1)
    level = logging.getLogger("scale_vlm").level
    try:
        demo.run_demo(demo.DemoConfig(quick=True, output_dir=str(tmp_path / "demo"), progress=False), say=print)
    finally:
        logging.getLogger("scale_vlm").setLevel(level)  # run_demo quietens the package logger for its workers
    said = capsys.readouterr().out
    assert "--quick set --num_train 64" in said and demo.QUICK_NOTE in said
    assert demo.QUICK_NOTE in (tmp_path / "demo" / "results.md").read_text()
    assert "trained models" in said and "usable with scale-vlm eval and grpo" in (tmp_path / "demo" / "results.md").read_text()


def test_demo_saves_each_trained_model(tmp_path):
    from scale_vlm import demo
    from scale_vlm.tiny.shipped import SHIPPED_BASE, has_shipped_base

    if not has_shipped_base():
        pytest.skip("no shipped tiny base")
    cfg = demo.DemoConfig(quick=True, max_steps=1, batch_size=2, num_train=4, progress=False)
    train = demo.prepare_once(demo.to_training_format(demo.make_benchmark(cfg.bench(0, "train", 4))), SHIPPED_BASE)
    demo.train_one("vanilla", cfg, tmp_path, train, SHIPPED_BASE)
    from scale_vlm.tiny.shipped import load_base

    load_base(str(tmp_path / "vanilla"))  # a reusable model folder: weights + processor


def test_plot_axes_are_labelled(tmp_path, monkeypatch):
    import matplotlib.figure

    from scale_vlm.demo import plot_curves
    from scale_vlm.schedules import WeightSchedule, plot_schedule

    labels = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *a, **k):
        labels.extend((ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes)
        return save(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    hist = [{"step": s, "loss_think": 1.0 / s, "loss_answer": 0.5 / s, "w_think": 0.5, "w_answer": 0.5} for s in (1, 2)]
    plot_curves({"vanilla": hist, "scale": hist}, tmp_path / "c.png")
    plot_schedule(WeightSchedule(), str(tmp_path / "s.png"))
    assert len(labels) == 4 and all(x and y for x, y in labels), labels


# ------------------------------------------------------------------------ 10. one quiet, correct log per run


def test_sft_run_logs_the_data_summary_once_and_writes_a_clean_model_card(tiny_qwen_dir, tmp_path, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="scale_vlm")
    out = tmp_path / "run"
    assert _sft(tiny_qwen_dir, _data(tmp_path / "d"), out) == 0
    printed = capsys.readouterr()
    summaries = [r for r in caplog.records if "prepared 8/8 examples" in r.getMessage()]
    assert len(summaries) == 1 and summaries[0].levelno == logging.INFO
    assert "prepared 8/8" not in printed.out + printed.err
    assert not [r for r in caplog.records if "video processor" in r.getMessage() and r.levelno >= logging.INFO]
    assert not [r for r in caplog.records if "pin_memory" in r.getMessage()]
    card = (out / "README.md").read_text()
    assert "[None]" not in card and 'model="None"' not in card and f"| base model | `{tiny_qwen_dir}` |" in card


def test_no_pin_memory_without_a_gpu():
    import torch

    from scale_vlm.grpo_config import ScaleGRPOConfig
    from scale_vlm.sft_config import ScaleSFTConfig

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert ScaleSFTConfig(output_dir="unused").dataloader_pin_memory is False
    assert ScaleGRPOConfig(output_dir="unused").dataloader_pin_memory is False


# ------------------------------------------------------------------------ smaller items


def test_sft_help_starts_with_the_scale_options(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: scale-vlm sft [--config FILE.yaml]")
    assert lines[2] == "SCALe options:" and any(line.strip().startswith("--method") for line in lines[:6])


@pytest.mark.parametrize("command", ["plot-schedule", "inspect-data", "make-data", "demo", "build-base"])
def test_every_option_has_help_and_the_usage_names_the_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: scale-vlm {command} ")
    if command in ("plot-schedule", "inspect-data", "make-data"):
        import re

        # every option line is followed by its help (argparse prints "(default: ...)" only after a help text)
        options = re.findall(r"^  (--\w+)", text, flags=re.MULTILINE)
        assert options and text.count("(default:") >= len(options) - 1, text  # -1: --help itself


def test_data_report_lists_the_skipped_examples(tiny_qwen_dir, tmp_path):
    out = tmp_path / "run"
    assert _sft(tiny_qwen_dir, _bad_example_file(tmp_path / "d"), out, "--bad_example_policy", "skip",
                "--save_strategy", "no") == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped"] == {"missing_tag": 1} and report["skipped_examples"] == {"missing_tag": [1]}


def test_relative_image_path_error_names_image_root(tmp_path, monkeypatch):
    from scale_vlm.data.formats import ExampleError, normalize_example

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExampleError, match=r"example 5: image file not found: images/a.png \(relative path "
                                           r"'images/a.png' resolved against the working directory .* set image_root"):
        normalize_example(good_row(5, "images/a.png"), 5)


def test_latin1_bytes_are_counted_and_reported(tmp_path, caplog):
    import logging

    from scale_vlm.data.prepare import read_json_rows

    path = write_good_jsonl(tmp_path, 2)
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1].replace(b"How many", "Caf\u00e9 \u00e0 how many".encode("latin-1"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    caplog.set_level(logging.WARNING, logger="scale_vlm")
    rows = read_json_rows(path)
    assert "Caf\ufffd \ufffd how many" in json.dumps(rows[1], ensure_ascii=False)
    (record,) = [r for r in caplog.records if "invalid UTF-8" in r.getMessage()]
    assert "2 invalid UTF-8 byte(s)" in record.getMessage() and "line(s) 2" in record.getMessage()


def test_required_options_may_still_come_from_the_config_file(tiny_qwen_dir, tmp_path, capsys):
    """The unknown-flag check runs before TrlParser reads --config: options the file supplies are not missing."""
    import yaml

    config = tmp_path / "inspect.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": tiny_qwen_dir,
                                      "dataset_name": str(write_good_jsonl(tmp_path, 2))}))
    assert main(["inspect-data", "--config", str(config), "--json", "--num_examples", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["num_examples"] == 2


# ------------------------------------------------------------------------ 11. one loader for every command


def _hub_snapshot(folder, splits):
    """A dataset folder in the hub's own layout (``data/<split>-00000-of-00001.parquet``, images embedded), as a
    downloaded snapshot looks on an offline cluster."""
    from datasets import Dataset
    from reliability_support import colour_image

    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# shapes\n")
    for split, indices in splits.items():
        Dataset.from_list([good_row(i, colour_image(i)) for i in indices]).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_a_hub_layout_folder_evaluates_and_trains(tiny_qwen_dir, tmp_path, capsys):
    snapshot = _hub_snapshot(tmp_path / "shapes", {"train": range(4), "test": [5, 7]})
    out = tmp_path / "eval"
    assert main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(snapshot), "--output_dir",
                 str(out), "--max_new_tokens", "4", "--progress", "false"]) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in predictions] == ["1", "3"]  # the test split's answer blocks, in order
    assert "examples 2" in capsys.readouterr().out
    assert _inspect_count(capsys, tiny_qwen_dir, snapshot) == 4
    assert _inspect_count(capsys, tiny_qwen_dir, snapshot, "--dataset_train_split", "test") == 2
    rc = main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(snapshot),
               "--dataset_train_split", "validation"])
    _assert_user_error(capsys, rc, "has no split 'validation'; available: ['test', 'train']", "--dataset_train_split",
                       command="inspect-data")
    assert _sft(tiny_qwen_dir, snapshot, tmp_path / "sft") == 0
    assert json.loads((tmp_path / "sft" / "data_report.json").read_text())["total"] == 4


def test_pickle_data_is_refused_not_loaded(tmp_path):
    from scale_vlm.data.prepare import load_rows

    (tmp_path / "data.pkl").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="pickle files are never loaded"):
        load_rows(str(tmp_path / "data.pkl"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.pickle").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match=r"holds pickle files \(train.pickle\)"):
        load_rows(str(tmp_path / "folder"))


# ------------------------------------------------------------------------ 12. one set of option names


class _Parsed(Exception):
    """Raised in place of running the command, carrying what its options parsed to."""


def _parsed(monkeypatch, command, argv):
    from scale_vlm.cli import common, sft

    real = common.parse

    def capture(parser, args):
        raise _Parsed(real(parser, args))

    monkeypatch.setattr(common, "parse", capture)
    monkeypatch.setattr(sft, "parse", capture)
    with pytest.raises(_Parsed) as info:
        main([command, *argv])
    return {k: v for part in info.value.args[0] for k, v in vars(part).items()}


# command -> (option -> its spellings, the canonical one first; other options the command needs)
OPTION_SPELLINGS = {
    "eval": ({"model_name_or_path": ["--model_name_or_path", "--model"],
              "dataset_name": ["--dataset_name", "--dataset"],
              "dataset_test_split": ["--dataset_test_split", "--split"]}, ["--output_dir", "o"]),
    "grpo": ({"model_name_or_path": ["--model_name_or_path", "--model"],
              "dataset_name": ["--dataset_name", "--dataset"],
              "dataset_train_split": ["--dataset_train_split", "--dataset_split"]}, ["--output_dir", "o"]),
    "inspect-data": ({"model_name_or_path": ["--model_name_or_path", "--model"],
                      "dataset_name": ["--dataset_name", "--dataset"],
                      "dataset_train_split": ["--dataset_train_split"]}, []),
    "sft": ({"model_name_or_path": ["--model_name_or_path"], "dataset_name": ["--dataset_name"],
             "dataset_train_split": ["--dataset_train_split"]}, ["--output_dir", "o"]),
}


@pytest.mark.parametrize("command", sorted(OPTION_SPELLINGS))
def test_every_spelling_of_an_option_sets_the_same_value(command, monkeypatch, capsys):
    spellings, extra = OPTION_SPELLINGS[command]
    for dest, flags in spellings.items():
        for flag in flags:
            argv = [*extra]
            for other, other_flags in spellings.items():
                argv += [flag if other == dest else other_flags[0], f"{other}-via-{flag}"]
            assert _parsed(monkeypatch, command, argv)[dest] == f"{dest}-via-{flag}", (command, flag)
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for dest, flags in spellings.items():
        for flag in flags:  # each spelling is listed with its option
            assert f"{flag} {dest.upper()}" in help_text, (command, flag)


def test_a_config_file_may_use_the_older_option_names(monkeypatch, tmp_path):
    import yaml

    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"model": "m", "dataset": "d", "split": "validation", "output_dir": "o"}))
    parsed = _parsed(monkeypatch, "eval", ["--config", str(config)])
    assert (parsed["model_name_or_path"], parsed["dataset_name"], parsed["dataset_test_split"]) == ("m", "d",
                                                                                                   "validation")


# ------------------------------------------------------------------------ issue 26: the practitioner's path
# LoRA SFT then GRPO, evaluation prompts that match training, a run that reports itself: each test replays the
# user's commands through the CLI.

SHIPPED_TRAIN = ["--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """The built-in benchmark written as the user's data (``make-data``): train (8) and test (6) JSONL files."""
    folder = tmp_path_factory.mktemp("bench-data")
    # option-letter answers: the base model guesses a letter often enough that GRPO's rewards differ in a group
    assert main(["make-data", "--output_dir", str(folder), "--num_examples", "8", "--num_test", "6",
                 "--option_letter_fraction", "1.0", "--overwrite_output_dir", "true"]) == 0
    return folder


def _shipped_base():
    from scale_vlm.tiny.shipped import SHIPPED_BASE, has_shipped_base

    if not has_shipped_base():
        pytest.skip("no shipped tiny base")
    return str(SHIPPED_BASE)


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_grpo_continues_the_adapter_of_a_lora_sft_run(bench_data, tmp_path, caplog):
    """The issue's commands: sft --use_peft with q/k/v/o targets, then grpo on that output (a raw 'does not
    require grad' crash before). GRPO trains the SFT adapter itself: same keys, changed values, no base weights."""
    import logging

    caplog.set_level(logging.INFO, logger="scale_vlm")
    base, train = _shipped_base(), str(bench_data / "train.jsonl")
    sft_out, grpo_out = tmp_path / "sft-lora", tmp_path / "grpo"
    assert main(["sft", "--model_name_or_path", base, "--dataset_name", train, "--output_dir", str(sft_out),
                 "--use_peft", "true", "--lora_target_modules", "q_proj", "k_proj", "v_proj", "o_proj",
                 "--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no",
                 *SHIPPED_TRAIN]) == 0
    assert main(["grpo", "--model_name_or_path", str(sft_out), "--dataset_name", train, "--output_dir",
                 str(grpo_out), "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "16",
                 "--max_completion_length", "4", "--learning_rate", "1e-3", *SHIPPED_TRAIN]) == 0
    assert any("is a LoRA run: continuing its adapter (r=16)" in r.getMessage() for r in caplog.records)
    before, after = _tensors(sft_out / "adapter_model.safetensors"), _tensors(grpo_out / "adapter_model.safetensors")
    assert sorted(before) == sorted(after) and len(before) == 4 * 4 * 2  # 4 layers x q/k/v/o x lora_A/B
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed, "GRPO left the adapter unchanged"
    assert not (grpo_out / "model.safetensors").exists() and not (grpo_out / "ref").exists()
    card = (grpo_out / "README.md").read_text()  # the card says what trained: the continued adapter
    assert "library_name: peft" in card and "LoRA adapter (r 16, alpha 32) on k_proj, o_proj, q_proj, v_proj" in card
    config = json.loads((grpo_out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base and sorted(config["target_modules"]) == \
        ["k_proj", "o_proj", "q_proj", "v_proj"]
    history = json.loads((grpo_out / "log_history.json").read_text())
    assert history[0]["grad_norm"] > 0 and history[0]["reward"] > 0  # a real policy gradient moved the adapter
    # GRPO's prompts (the SFT file's, as written) agree with the SFT run's record, and are recorded in turn
    assert json.loads((grpo_out / "prompt_form.json").read_text())["common_prefix"] == \
        json.loads((sft_out / "prompt_form.json").read_text())["common_prefix"]


@pytest.mark.parametrize("beta", ["0", "0.04"])  # 0.04: with the KL term, TRL's frozen "ref" adapter rides along
def test_a_lora_grpo_run_resumed_after_a_crash_ends_where_an_uninterrupted_one_does(bench_data, tmp_path,
                                                                                     monkeypatch, beta):
    """LoRA SFT, then GRPO continuing its adapter, killed after its step-2 checkpoint and resumed with
    --resume_from_checkpoint true: the resumed steps' rewards and losses, and the adapter it saves, are those of the
    run that was never interrupted (the rewards differ within groups here, so the policy moves)."""
    base, train = _shipped_base(), str(bench_data / "train.jsonl")
    sft_out = tmp_path / "sft-lora"
    assert main(["sft", "--model_name_or_path", base, "--dataset_name", train, "--output_dir", str(sft_out),
                 "--use_peft", "true", "--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy",
                 "no", *SHIPPED_TRAIN]) == 0

    def grpo(out, *extra):
        return main(["grpo", "--model_name_or_path", str(sft_out), "--dataset_name", train, "--output_dir", str(out),
                     "--max_steps", "4", "--num_generations", "4", "--per_device_train_batch_size", "8",
                     "--max_completion_length", "4", "--learning_rate", "1e-2", "--logging_steps", "1",
                     "--save_steps", "2", "--beta", beta, *SHIPPED_TRAIN, *extra])

    def steps(out):
        history = json.loads((out / "log_history.json").read_text())
        return {h["step"]: (h["reward"], h["loss"], h["generated_tokens"]) for h in history if "reward" in h}

    assert grpo(tmp_path / "full") == 0
    with monkeypatch.context() as patch:
        _interrupt_grpo_at(patch, 3)
        assert grpo(tmp_path / "cut") == 130
    assert grpo(tmp_path / "cut", "--resume_from_checkpoint", "true") == 0
    got, want = steps(tmp_path / "cut"), steps(tmp_path / "full")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    assert len({reward for reward, _, _ in want.values()}) > 1
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), step
    if beta != "0":  # the KL term was live: the policy moved away from the frozen reference adapter
        kl = [h["kl"] for h in json.loads((tmp_path / "cut" / "log_history.json").read_text()) if "kl" in h]
        assert len(kl) == 4 and max(kl) > 0
    before = _tensors(sft_out / "adapter_model.safetensors")
    full, resumed = (_tensors(tmp_path / name / "adapter_model.safetensors") for name in ("full", "cut"))
    assert sorted(resumed) == sorted(full) == sorted(before)
    assert any(not torch.equal(full[k], before[k]) for k in full)  # GRPO moved the adapter...
    for key in full:  # ... and the resumed run moved it the same way
        assert torch.allclose(resumed[key], full[key], rtol=1e-4, atol=1e-6), key


def test_grpo_takes_lora_options_like_sft(bench_data, tmp_path, capsys):
    """A full model plus --use_peft: TRL's GRPOTrainer gets the peft_config; only the adapter is saved."""
    base, train = _shipped_base(), str(bench_data / "train.jsonl")
    out = tmp_path / "grpo"
    assert main(["grpo", "--model_name_or_path", base, "--dataset_name", train, "--output_dir", str(out),
                 "--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--max_steps",
                 "1", "--num_generations", "4", "--per_device_train_batch_size", "16", "--max_completion_length", "4",
                 "--learning_rate", "1e-3", *SHIPPED_TRAIN]) == 0
    adapter = _tensors(out / "adapter_model.safetensors")
    assert len(adapter) == 4 * 2 * 2 and {tuple(t.shape) for k, t in adapter.items() if "lora_A" in k} == {(4, 128)}
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at zero: it trained
    # a LoRA run given --use_peft is refused (TRL refuses a PeftModel with a peft_config), with what to do
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    rc = main(["grpo", "--model_name_or_path", str(tmp_path / "lora"), "--use_peft", "true", "--output_dir",
               str(tmp_path / "g2"), "--use_cpu", "true"])
    _assert_user_error(capsys, rc, "is a LoRA run", "GRPO continues its adapter", "drop --use_peft", command="grpo")


def test_use_peft_alone_adapts_the_language_model_and_says_so(tiny_qwen_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="scale_vlm")
    out = tmp_path / "run"
    assert _sft(tiny_qwen_dir, _data(tmp_path / "d"), out, "--use_peft", "true", "--save_strategy", "no") == 0
    (said,) = [r.getMessage() for r in caplog.records if "LoRA on the language model's linear layers" in r.getMessage()]
    assert "(down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj; vision tower" in said
    assert "--lora_target_modules all-linear" in said
    keys = sorted(_tensors(out / "adapter_model.safetensors"))
    assert keys and all(".language_model.layers." in k for k in keys)  # no vision tower, projector or lm_head
    assert len(keys) == 2 * 7 * 2  # 2 layers x 7 linear layers x lora_A/B


def test_sft_continues_the_adapter_of_a_lora_run(tiny_qwen_dir, tmp_path, capsys):
    """SFT given a LoRA run trains that adapter on (as GRPO does): the same keys, changed values, no base weights;
    with --use_peft, which would stack a second adapter, it is refused with what to do."""
    data, first, second = _data(tmp_path / "d"), tmp_path / "lora", tmp_path / "again"
    assert _sft(tiny_qwen_dir, data, first, "--use_peft", "true", "--save_strategy", "no") == 0
    assert _sft(str(first), data, second, "--save_strategy", "no") == 0
    before, after = _tensors(first / "adapter_model.safetensors"), _tensors(second / "adapter_model.safetensors")
    assert sorted(before) == sorted(after) and len(before) == 2 * 7 * 2
    assert [k for k in before if not (before[k] == after[k]).all()], "the second SFT left the adapter unchanged"
    assert not (second / "model.safetensors").exists()
    assert json.loads((second / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_qwen_dir
    rc = _sft(str(first), data, tmp_path / "refused", "--use_peft", "true")
    _assert_user_error(capsys, rc, "is a LoRA run", "SFT continues its adapter", "drop --use_peft")


@pytest.mark.parametrize("extra, fragment", [
    (["--use_peft", "true", "--lora_target_modules", "qproj"],
     "--lora_target_modules qproj: no linear layer of Qwen2VLForConditionalGeneration has that name; its linear "
     "layers are named down_proj, fc1, fc2, gate_proj, k_proj, lm_head, mlp.0, mlp.2, o_proj, proj, q_proj, qkv, "
     "up_proj, v_proj"),
    (["--use_peft", "true", "--lora_r", "0"], "--lora_r must be a positive integer"),
    (["--use_peft", "true", "--lora_dropout", "1.5"], "--lora_dropout must be in [0, 1)"),
    (["--lora_r", "8"], "--lora_r set without --use_peft"),
])
def test_lora_options_are_checked_before_the_model_loads(extra, fragment, tiny_qwen_dir, tmp_path, capsys,
                                                        monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the LoRA options were checked"))
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "d"), tmp_path / "out", *extra)
    _assert_user_error(capsys, rc, fragment)
    rc = main(["grpo", "--model_name_or_path", tiny_qwen_dir, "--output_dir", str(tmp_path / "g"), "--use_cpu",
               "true", *extra])
    _assert_user_error(capsys, rc, fragment, command="grpo")


def _columns_copy(folder, out):
    """The held-out questions of a messages file as image/question/answer columns (the issue's second file)."""
    from scale_vlm.parsing import parse_output

    rows = []
    for line in (folder / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
        rows.append({"image": str(folder / row["images"][0]), "question": user[-1]["text"],
                     "answer": parse_output(assistant[0]["text"]).answer, "choices": row["choices"]})
    return write_jsonl(out, rows)


def test_eval_refuses_prompts_other_than_training(bench_data, tmp_path, capsys):
    """sft records the form of its prompts; eval of the held-out split as written agrees with it, eval through
    the column mapping (its own 'Question: ...' template) is refused before the model loads, or said loudly."""
    from scale_vlm.eval.prompt_form import AS_WRITTEN, TEMPLATE

    base, run = _shipped_base(), tmp_path / "sft"
    assert main(["sft", "--model_name_or_path", base, "--dataset_name", str(bench_data), "--output_dir", str(run),
                 "--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no",
                 *SHIPPED_TRAIN]) == 0
    form = json.loads((run / "prompt_form.json").read_text())
    first = json.loads((bench_data / "train.jsonl").read_text().splitlines()[0])["messages"][0]["content"][-1]["text"]
    assert form["template"] == AS_WRITTEN and form["num_prompts"] == 8 and form["examples"][0] == first[:160] + "..."
    assert form["common_suffix"].endswith("then give only the final answer inside <answer></answer>.")
    capsys.readouterr()

    def evaluate(data, out, *extra):
        return main(["eval", "--model_name_or_path", str(run), "--dataset_name", str(data), "--output_dir",
                     str(tmp_path / out), "--limit", "2", "--max_new_tokens", "4", "--progress", "false", *extra])

    assert evaluate(bench_data, "same") == 0  # the data's test split, prompts as written: equal by construction
    check = json.loads((tmp_path / "same" / "metrics.json").read_text())["prompt_check"]
    assert check["differences"] == [] and check["trained"]["template"] == check["used"]["template"] == AS_WRITTEN
    capsys.readouterr()
    columns = _columns_copy(bench_data, tmp_path / "columns.jsonl")
    rc = evaluate(columns, "other")
    err = _assert_user_error(capsys, rc, f"the model was trained on prompts {AS_WRITTEN}, these are {TEMPLATE}",
                             "--adapter sft", "--allow_prompt_mismatch true", command="eval")
    assert "Question: " in err and not (tmp_path / "other" / "metrics.json").exists()
    assert evaluate(columns, "other", "--allow_prompt_mismatch", "true") == 0
    assert "scale-vlm eval: WARNING: the prompts differ from those" in capsys.readouterr().err
    check = json.loads((tmp_path / "other" / "metrics.json").read_text())["prompt_check"]
    assert check["used"]["template"] == TEMPLATE and len(check["differences"]) == 2  # template and beginning


def test_a_held_out_sample_of_the_training_prompts_never_differs():
    from scale_vlm.eval.adapters import build_prompt
    from scale_vlm.eval.prompt_form import differences, prompt_form

    written = [f"How many {w}s? Say it with a number." for w in ("circle", "square", "star", "cross")]
    assert differences(prompt_form(written), prompt_form(written[2:3])) == []
    assert differences(prompt_form(written[:1]), prompt_form(["What colour is it?"])) == []  # one prompt: no template
    assert differences(prompt_form(written[:2]), prompt_form(written)) == []
    templated = [build_prompt(p) for p in written]
    assert len(differences(prompt_form(written), prompt_form(templated))) == 3  # template, beginning, end
    other_end = [p.replace("number.", "word.") for p in written]
    assert differences(prompt_form(written), prompt_form(other_end)) == [
        "the training prompts all end with 's? Say it with a number.', these with 's? Say it with a word.'"]


def _choices_file(folder, with_choices=True):
    from reliability_support import colour_image

    folder.mkdir(parents=True, exist_ok=True)
    colour_image(0).save(folder / "q.png")
    rows = [{"image": "q.png", "question": "Which colour is the square?", "answer": "B",
             **({"choices": ["red", "green", "blue"]} if with_choices else {})},
            {"image": "q.png", "question": "Which shape is it?", "answer": "A",
             **({"choices": ["square", "circle"]} if with_choices else {})}]
    return write_jsonl(folder / "test.jsonl", rows)


def test_eval_finds_the_choices_column_by_name(tiny_qwen_dir, tmp_path, capsys):
    data, out = _choices_file(tmp_path / "d"), tmp_path / "o"
    assert main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--output_dir", str(out),
                 "--max_new_tokens", "2", "--progress", "false"]) == 0
    assert "majority baseline 0.500 (always answering 'B', the most common gold" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["B", "A"]
    assert rows[0]["prompt"].splitlines()[:2] == ["Question: Which colour is the square?",
                                                  "Options: (A) red (B) green (C) blue"]
    from scale_vlm.eval.adapters import ColumnMapping, load_eval_dataset

    # --choices_column '' says the data has none: the letter golds are then refused, as without the column
    assert load_eval_dataset(str(data), columns=ColumnMapping())[1].choices == ["square", "circle"]
    with pytest.raises(ValueError, match="example 0: the answer 'B' is an option letter but the example has no"):
        load_eval_dataset(str(data), columns=ColumnMapping(choices_column=""))


def test_eval_refuses_letter_golds_without_choices(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the golds were checked"))
    data = _choices_file(tmp_path / "d", with_choices=False)
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(data), "--output_dir",
               str(tmp_path / "o")])
    _assert_user_error(capsys, rc, "example 0: the answer 'B' is an option letter but the example has no choices",
                       "--choices_column NAME", command="eval")


def test_an_sft_run_reports_itself(tiny_qwen_dir, tmp_path, monkeypatch):
    """The model card says method, schedule, weights, data, segment counts and final segment losses (TRL's generic
    text card before); the demo's training-curve figure is written, with the adaptive schedule's progress."""
    import matplotlib.axes

    lines = []
    plot = matplotlib.axes.Axes.plot

    def record(ax, *a, **k):
        lines.append((k.get("label"), list(a[1]) if len(a) > 1 else None))
        return plot(ax, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    out = tmp_path / "run"
    assert _sft(tiny_qwen_dir, _data(tmp_path / "d", n=6), out, "--progress_mode", "adaptive", "--use_peft", "true",
                "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--save_strategy", "no") == 0
    card = (out / "README.md").read_text()
    report = json.loads((out / "data_report.json").read_text())
    assert "| method | SCALe (think and answer segments" in card
    assert "| schedule | cosine: think weight 0.8 -> 0.2, answer weight 0.2 -> 0.8, progress adaptive |" in card
    assert "| weights | LoRA adapter (r 4, alpha 32) on q_proj, v_proj; base weights frozen |" in card
    assert "examples trained on" in card and f"| data | `{tmp_path / 'd' / 'train.jsonl'}`: 6 of 6 examples" in card
    assert f"| segment tokens | think {report['think_tokens']}, answer {report['answer_tokens']} " in card
    assert "| training | 2 optimizer steps" in card and "library_name: peft" in card
    final = next(line for line in card.splitlines() if line.startswith("| final segment losses |"))
    assert "(nats/token, step 2 at weights think" in final
    assert "time machine" not in card.lower() and "pipeline(" not in card
    assert (out / "training_curves.png").stat().st_size > 10_000 and "![training curves](training_curves.png)" in card
    labels = [label for label, _ in lines]
    assert labels.count("scale") == 2 and "w_think" in labels and "schedule progress (adaptive)" in labels
    progress = next(ys for label, ys in lines if label == "schedule progress (adaptive)")
    assert len(progress) == 2 and all(0.0 <= p <= 1.0 for p in progress)


def test_eval_says_when_accuracy_comes_from_malformed_replies():
    from scale_vlm.eval.adapters import EvalExample
    from scale_vlm.eval.evaluate import format_summary, score_outputs, summarize
    from scale_vlm.report import majority_baseline

    examples = [EvalExample(str(i), [], "q", gold, ["x", "y"]) for i, gold in enumerate("BBA")]
    outputs = ["B", "<think>two</think><answer>A</answer>", "<think>one, so the first</think><answer>A</answer>"]
    def words(text, add_special_tokens=False):
        return {"input_ids": text.split()}

    metrics = summarize(score_outputs(examples, outputs, words))
    assert (metrics["accuracy"], metrics["malformed_rate"], metrics["correct_malformed_rate"]) == (2 / 3, 1 / 3, 1 / 3)
    metrics["majority_baseline"] = majority_baseline("BBA", "BBA")
    text = format_summary(metrics)
    assert "majority baseline 0.667 (always answering 'B'" in text
    assert "WARNING: 0.333 of the 0.667 accuracy comes from malformed replies" in text
    metrics["correct_malformed_rate"] = 0.0
    assert "WARNING" not in format_summary(metrics)


COMPARE_TINY = ["--num_grpo_prompts", "2", "--num_test", "2", "--sft_steps", "1", "--sft_batch_size", "2",
                "--grpo_steps", "1", "--grpo_batch_size", "4", "--num_generations", "2", "--max_completion_length",
                "4", "--max_new_tokens", "4", "--eval_batch_size", "2", "--progress", "false"]


def test_compare_runs_the_four_arms_on_the_users_data(bench_data, tmp_path, capsys):
    _shipped_base()
    out = tmp_path / "compare"
    assert main(["compare", "--dataset_name", str(bench_data), "--output_dir", str(out), "--num_train", "6",
                 *COMPARE_TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    arms = results["per_seed"]["0"]
    assert sorted(arms) == ["scale", "scale_grpo", "sft", "sft_grpo"]
    assert {arm: r["num_examples"] for arm, r in arms.items()} == dict.fromkeys(arms, 2)
    test_prompts = [json.loads(line)["messages"][0]["content"][-1]["text"]
                    for line in (bench_data / "test.jsonl").read_text().splitlines()[:2]]
    for arm in arms:  # every arm is scored on the user's held-out questions, as written
        rows = [json.loads(line) for line in (out / "seed0" / f"eval_{arm}" / "predictions.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == test_prompts
    assert arms["sft"]["sft_supervised_tokens"] > 0 and arms["scale_grpo"]["grpo_generated_tokens"] > 0
    # a test split in another form than the training prompts is refused before any training
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "train.jsonl").write_text((bench_data / "train.jsonl").read_text().replace('"images/', f'"{bench_data}/images/'))
    _columns_copy(bench_data, mixed / "test.jsonl")
    capsys.readouterr()
    rc = main(["compare", "--dataset_name", str(mixed), "--output_dir", str(tmp_path / "c2"), "--num_train", "6",
               *COMPARE_TINY])
    _assert_user_error(capsys, rc, "the test prompts differ from the SFT training prompts", "--adapter sft",
                       command="compare")
    assert not list((tmp_path / "c2").glob("seed0/sft_*/model"))


def test_compare_gives_grpo_the_users_rows_after_the_sft_rows(bench_data, tmp_path, capsys):
    """Held-out GRPO prompts (the default) are the training split's rows after the first --num_train; with
    --grpo_prompts sft_rows the first SFT rows; none left after the SFT rows is refused with the fix."""
    from scale_vlm.compare import CompareConfig
    from scale_vlm.compare.pipeline import user_data

    written = [json.loads(line)["messages"][0]["content"][-1]["text"]
               for line in (bench_data / "train.jsonl").read_text().splitlines()]

    def grpo_texts(**options):
        data = user_data(CompareConfig(dataset_name=str(bench_data), num_grpo_prompts=2, **options))
        return len(data["sft"]), [p[-1]["content"][-1]["text"] for p in data["grpo"]["prompt"]]

    assert grpo_texts(num_train=5) == (5, written[5:7])
    assert grpo_texts(num_train=7) == (7, written[7:8])  # fewer left than asked: those (and a warning)
    assert grpo_texts(num_train=5, grpo_prompts="sft_rows") == (5, written[:2])
    with pytest.raises(ValueError, match=r"'train' split has no rows after the 8 SFT trains on.*--grpo_prompts sft_rows"):
        grpo_texts(num_train=3000)
    capsys.readouterr()
    rc = main(["compare", "--dataset_name", str(bench_data), "--output_dir", str(tmp_path / "c"), *COMPARE_TINY])
    _assert_user_error(capsys, rc, "no rows after the 8 SFT trains on", "pass a smaller --num_train", command="compare")


# ------------------------------------------------------------------------ issue 26, item 7: the smaller ones


@pytest.mark.parametrize("command", ["sft", "eval", "grpo"])
def test_a_missing_config_file_is_named_with_the_fix(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([command, "--config", "nosuch.yaml"])
    _assert_user_error(capsys, rc, "--config 'nosuch.yaml' not found", str(tmp_path / "nosuch.yaml"),
                       "such as the scale_config.yaml a run writes", command=command)


def test_a_schedule_weight_above_one_is_refused(tiny_qwen_dir, tmp_path, capsys):
    rc = _sft(tiny_qwen_dir, _data(tmp_path / "d"), tmp_path / "out", "--think_weight_start", "1.5")
    _assert_user_error(capsys, rc, "--think_weight_start must be at most 1", "raise --learning_rate", "got 1.5")
    rc = main(["plot-schedule", "--answer_weight_end", "2"])
    _assert_user_error(capsys, rc, "--answer_weight_end must be at most 1", command="plot-schedule")
    assert main(["plot-schedule", "--think_weight_start", "1.0"]) == 0  # 1 itself is a weight


def test_eval_on_a_device_this_machine_lacks_is_a_clear_error(tiny_qwen_dir, tmp_path, capsys, monkeypatch):
    import torch
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the device was checked"))
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "builtin", "--limit", "2",
               "--output_dir", str(tmp_path / "e"), "--device", "cuda"])
    build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
    _assert_user_error(capsys, rc, f"--device cuda: {build}; use --device cpu", command="eval")
    rc = main(["eval", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", "builtin", "--output_dir",
               str(tmp_path / "e"), "--device", "gpu0"])
    _assert_user_error(capsys, rc, "--device 'gpu0' is not a device name", command="eval")


def test_missing_tags_suggest_the_tag_options(tiny_qwen_dir, tmp_path, capsys):
    rc = _sft(tiny_qwen_dir, _bad_example_file(tmp_path / "d"), tmp_path / "out")
    _assert_user_error(capsys, rc, "example 1: missing tag '<think>'", "--bad_example_policy skip",
                       "name them: --think_open --think_close --answer_open --answer_close")


def test_quick_demo_and_full_demo_default_to_different_folders():
    from scale_vlm.demo import DemoConfig

    assert DemoConfig().output_dir == "runs/demo" and DemoConfig(quick=True).output_dir == "runs/demo-quick"
    assert DemoConfig(quick=True, output_dir="mine").output_dir == "mine"


def test_a_resumed_run_says_which_checkpoint_it_continues(tiny_qwen_dir, tmp_path, capsys):
    out, data = tmp_path / "run", _data(tmp_path / "d")
    assert _sft(tiny_qwen_dir, data, out) == 0
    capsys.readouterr()
    assert _sft(tiny_qwen_dir, data, out, "--resume_from_checkpoint", "true") == 0
    assert f"scale-vlm sft: resuming from {out / 'checkpoint-2'} (step 2 of 2, epoch 0.50)" in capsys.readouterr().err
