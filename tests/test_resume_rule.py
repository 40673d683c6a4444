"""One resume rule for the CLI and the Python API: ``resume_from_checkpoint=True`` takes the newest *complete*
checkpoint (Trainer writes ``trainer_state.json`` last), never a half-written one."""

from __future__ import annotations

import json

import pytest
from reliability_support import write_good_jsonl

from scale_vlm.run_guard import resolve_resume_checkpoint


def _trainer(tiny_qwen_dir, data, out, max_steps=3):
    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    ds, root = load_training_dataset(str(data))
    args = ScaleSFTConfig(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=2, save_steps=1,
                          use_cpu=True, disable_tqdm=True, report_to="none", image_root=root, seed=0,
                          overwrite_output_dir=True)
    model, processor = load_base(tiny_qwen_dir)
    return ScaleSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)


def test_api_resume_true_skips_a_half_written_checkpoint(tiny_qwen_dir, tmp_path):
    from transformers import TrainerCallback

    class StopAfterTwoSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 2

    data, out = write_good_jsonl(tmp_path / "data", 8), tmp_path / "run"
    first = _trainer(tiny_qwen_dir, data, out)
    first.add_callback(StopAfterTwoSteps())
    first.train()
    # the run "died" while writing checkpoint-2: its trainer_state.json (written last) is cut short
    (out / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": ')
    assert resolve_resume_checkpoint(str(out), True) == str(out / "checkpoint-1")
    class CountSteps(TrainerCallback):
        trained: list = []

        def on_step_end(self, args, state, control, **kwargs):
            self.trained.append(state.global_step)

    trainer = _trainer(tiny_qwen_dir, data, out)
    trainer.add_callback(CountSteps())
    trainer.train(resume_from_checkpoint=True)
    # continued from step 1 (not from the cut-short step 2, not from scratch): steps 2 and 3 are trained
    assert CountSteps.trained == [2, 3]
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


def test_no_complete_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(ValueError, match="no complete checkpoint to resume from"):
        resolve_resume_checkpoint(str(tmp_path), True)
    assert resolve_resume_checkpoint(str(tmp_path), False) is None


def test_the_fingerprint_and_the_help_cover_every_scale_option():
    """A schedule or tag option added to its declaration reaches the resume fingerprint and the sft help group
    without a second list to update (a field missing there would let resume accept another run's checkpoint)."""
    from dataclasses import fields

    from scale_vlm.cli.sft import ESSENTIAL_OPTIONS, SCALE_OPTIONS
    from scale_vlm.run_guard import FINGERPRINT_FIELDS
    from scale_vlm.schedules import ScheduleFields
    from scale_vlm.segments import Tags
    from scale_vlm.sft_config import ScaleSFTConfig

    loss_settings = {f.name for f in fields(ScheduleFields)} | {f.name for f in fields(Tags)} | {"method", "normalization"}
    assert loss_settings <= set(FINGERPRINT_FIELDS), loss_settings - set(FINGERPRINT_FIELDS)
    assert {"untagged_answer", "think_open", "adaptive_ema"} <= loss_settings
    trl_fields = {f.name for f in fields(ScaleSFTConfig.__mro__[1])}  # SFTConfig
    ours = {f.name for f in fields(ScaleSFTConfig)} - trl_fields
    assert ours <= set(SCALE_OPTIONS) | set(ESSENTIAL_OPTIONS), ours - set(SCALE_OPTIONS) - set(ESSENTIAL_OPTIONS)
