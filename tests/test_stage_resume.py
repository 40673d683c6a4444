"""An interrupted SFT or GRPO stage of ``scale-vlm compare`` resumes from its last checkpoint and reports what an
uninterrupted run reports: the same per-step losses (and rewards), the same token counts, the seconds of every
segment of the run.

The run is interrupted in-process by a callback raising at the end of a step that left no checkpoint, as Ctrl-C or a
killed process does (the batches of that step and of those since the checkpoint are trained again on resume).
Losses are compared with ``rel=1e-5``, as tests/test_resume.py explains: the resumed steps run the same float32
operations on the same batches. The rows have different lengths, so a count that forgot the batches before the
checkpoint, or counted them twice, is off.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import TrainerCallback

from scale_vlm.stages import STARTED, run_stage, stage_done, stage_hash

REL = 1e-5


class Interrupt(TrainerCallback):
    """Raises at the end of step ``at``, before that step's logging and checkpoint."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"interrupted at step {self.at}")


def _progress(checkpoint) -> dict:
    from scale_vlm.drivers import PROGRESS_FILE

    return json.loads((checkpoint / PROGRESS_FILE).read_text())


def _as_if_long(checkpoint) -> dict:
    """The checkpoint's progress, its seconds set to 1000 (as if the steps before it had taken that long), so
    that the resumed run's seconds show whether they were carried on."""
    from scale_vlm.drivers import PROGRESS_FILE

    progress = _progress(checkpoint)
    assert progress["seconds"] > 0
    (checkpoint / PROGRESS_FILE).write_text(json.dumps({**progress, "seconds": 1000.0}))
    return progress


def test_a_resumable_stage_gets_its_unfinished_folder_back_and_others_are_moved_aside(tmp_path):
    seen = []

    def crash(folder):
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "checkpoint-2").mkdir()
        raise KeyboardInterrupt

    cfg = {"stage": "sft", "lr": 1e-3}
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "s", cfg, crash, resumable=True)
    assert (tmp_path / "s" / STARTED).read_text().strip() == stage_hash(cfg)
    record = run_stage(tmp_path / "s", cfg, lambda folder: seen.append(sorted(p.name for p in folder.iterdir()))
                       or {"ok": 1}, resumable=True)
    assert seen == [[STARTED], [STARTED, "checkpoint-2"]]  # the second call found the first one's checkpoint
    assert record["reused"] is False and stage_done(tmp_path / "s", stage_hash(cfg))
    assert not list(tmp_path.glob("s.old-*"))
    # an unfinished folder of another config is moved aside, even for a resumable stage
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "t", cfg, crash, resumable=True)
    run_stage(tmp_path / "t", {**cfg, "lr": 2e-3}, lambda folder: seen.append(sorted(p.name for p in folder.iterdir()))
              or {}, resumable=True)
    assert seen[-1] == [STARTED] and (tmp_path / "t.old-1" / "checkpoint-2").is_dir()


def test_last_checkpoint_passes_over_one_cut_off_while_being_written(tmp_path):
    from scale_vlm.drivers import PROGRESS_FILE, last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    for step in (2, 10, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}" / PROGRESS_FILE).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step, not by name; 12 has no progress


def test_timed_train_refuses_a_checkpoint_without_its_progress(tmp_path):
    from scale_vlm.drivers import timed_train

    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(ValueError, match="checkpoint-2 has no run_progress.json"):
        timed_train(object(), None, str(tmp_path / "checkpoint-2"), carried=("generated_tokens",))


def _sft_args(out, **kw):
    from scale_vlm.drivers import sft_args

    return sft_args(out, "scale", {"schedule": "cosine"}, steps=6, batch_size=2, learning_rate=5e-3, seed=0,
                    progress=False, logging_steps=1, save_strategy="steps", save_steps=2, save_total_limit=1, **kw)


def test_an_interrupted_sft_stage_resumes_with_the_losses_and_counts_of_an_uninterrupted_one(tiny_qwen_dir,
                                                                                             varied_dataset, tmp_path):
    from scale_vlm.drivers import last_checkpoint, prepare_sft_rows, train_sft

    torch.set_num_threads(1)
    rows = prepare_sft_rows(varied_dataset, tiny_qwen_dir)  # 8 rows of different lengths, 4 batches per epoch
    full = train_sft(tiny_qwen_dir, _sft_args(tmp_path / "full"), rows)
    with pytest.raises(KeyboardInterrupt):  # after the step-2 checkpoint, in the first epoch
        train_sft(tiny_qwen_dir, _sft_args(tmp_path / "cut"), rows, callbacks=[Interrupt(3)])
    checkpoint = last_checkpoint(tmp_path / "cut")
    assert checkpoint.endswith("checkpoint-2")
    before = _as_if_long(tmp_path / "cut" / "checkpoint-2")
    t0 = time.perf_counter()
    resumed = train_sft(tiny_qwen_dir, _sft_args(tmp_path / "cut"), rows, resume=True)
    segment = time.perf_counter() - t0

    def losses(run):
        return {h["step"]: (h["loss"], h["loss_think"], h["loss_answer"], h["w_think"]) for h in run.log_history
                if "loss_think" in h}

    got, want = losses(resumed), losses(full)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=REL), step
    assert resumed.trainer.input_tokens == full.trainer.input_tokens
    assert resumed.trainer.supervised_tokens == full.trainer.supervised_tokens
    assert 0 < before["_input_count"] < full.trainer.input_tokens  # two steps' worth were carried in
    assert 1000 < resumed.seconds < 1000 + segment  # the steps before the checkpoint, then this segment's


def _length_reward(prompts, completions, **kwargs):
    # varies within every group, so that the advantages (and the updates) are non-zero for a random model
    return [len(c[0]["content"]) / 100.0 for c in completions]


def test_an_interrupted_grpo_run_resumes_with_the_rewards_counts_and_probe_of_an_uninterrupted_one(tmp_path):
    from scale_vlm.drivers import last_checkpoint, timed_train
    from scale_vlm.eval.adapters import load_eval_dataset
    from scale_vlm.grpo_config import ScaleGRPOConfig
    from scale_vlm.grpo_trainer import GreedyProbe, ScaleGRPOTrainer, load_grpo_dataset
    from scale_vlm.report import probe_curve
    from scale_vlm.rewards import make_reward_funcs
    from scale_vlm.tiny.corpus import corpus_texts
    from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny
    from scale_vlm.tiny.shipped import load_base

    torch.set_num_threads(1)
    save_tiny(*build_tiny_qwen2_vl(corpus_texts(per_setting=20), vocab_size=400, num_layers=2), tmp_path / "base")
    dataset = load_grpo_dataset("builtin", "train", builtin_size=8)
    questions = load_eval_dataset("builtin", "test", builtin_size=3)

    def train(out, callbacks, resume=False):
        model, processor = load_base(tmp_path / "base")
        args = ScaleGRPOConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=8, num_generations=4,
                               max_completion_length=12, learning_rate=1e-2, reward_weights=[1.0, 0.5, 1.0],
                               use_cpu=True, disable_tqdm=True, seed=0, report_to="none", logging_steps=1,
                               save_strategy="steps", save_steps=2, save_total_limit=1)
        probe = GreedyProbe(questions, 2, max_new_tokens=8)
        trainer = ScaleGRPOTrainer(model=model, reward_funcs=make_reward_funcs(("accuracy", "format")) + [_length_reward],
                                   args=args, train_dataset=dataset, processing_class=processor,
                                   callbacks=[probe, *callbacks])
        return timed_train(trainer, processor, last_checkpoint(out) if resume else None, carried=("generated_tokens",))

    full = train(tmp_path / "full", [])
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", [Interrupt(3)])
    before = _as_if_long(tmp_path / "cut" / "checkpoint-2")
    t0 = time.perf_counter()
    resumed = train(tmp_path / "cut", [], resume=True)
    segment = time.perf_counter() - t0

    def steps(run):
        return {h["step"]: (h["reward"], h["loss"], h["generated_tokens"]) for h in run.log_history if "reward" in h}

    got, want = steps(resumed), steps(full)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    assert len({reward for reward, _, _ in want.values()}) > 1  # the policy moved: the resumed steps had to follow it
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=REL), step
    assert resumed.trainer.generated_tokens == full.trainer.generated_tokens > before["generated_tokens"] > 0
    # the probe rows before the checkpoint come back with the trainer state; the resumed run adds the later ones
    got_probe, want_probe = probe_curve(resumed.log_history), probe_curve(full.log_history)
    assert [r["step"] for r in got_probe] == [r["step"] for r in want_probe] == [0, 2, 4]
    assert [r["accuracy"] for r in got_probe] == [r["accuracy"] for r in want_probe]
    assert 1000 < resumed.seconds < 1000 + segment
