"""The adaptive schedule progress (``progress_mode="adaptive"``): the pure update with numbers, the callback's resume
checks, and a short SCALe run whose logged progress is the pure update replayed on its logged think losses, then
resumed from a checkpoint with exactly the same weights. Multi-process exactness: ``tests/test_distributed.py``
(slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from scale_vlm.adaptive_schedule import AdaptiveProgressCallback
from scale_vlm.schedules import AdaptiveParams, AdaptiveState, advance, floor_progress, is_plateau


def _run(losses, max_steps, params, tokens=10.0):
    """Feed one think loss per optimizer step; returns the progress of every step (0-based: step 0 first)."""
    state, progress = AdaptiveState(), []
    for step, loss in enumerate(losses, start=1):
        progress.append(state.progress)
        state = advance(state, loss * tokens, tokens, step, max_steps, params)
    return progress, state


# ------------------------------------------------------------------------------------------- the pure update


def test_floor_is_delayed_step_progress_reaching_one_at_the_last_step():
    # 11 steps: step progress k/10; delay 0.5 -> 0 up to step 5, then (k/10 - 0.5) / 0.5
    assert [floor_progress(k, 11, 0.5) for k in range(11)] == pytest.approx(
        [0, 0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert [floor_progress(k, 5, 0.0) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]  # delay 0: step progress


def test_a_falling_think_loss_keeps_the_progress_at_its_floor():
    params = AdaptiveParams(ema=0.0, window=2, tolerance=0.01, ramp=0.5, floor_delay=0.5)
    losses = [10.0 * 0.9 ** k for k in range(11)]  # 10% better every step: never a plateau
    progress, state = _run(losses, 11, params)
    assert progress == pytest.approx([0, 0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert progress == [floor_progress(k, 11, 0.5) for k in range(11)]
    assert state.plateaued_steps == 0 and state.progress == 1.0


def test_a_flat_think_loss_advances_the_progress_over_the_ramp():
    # window 2: the third measurement is the first that can show a plateau; ramp 0.5 of 10 step intervals -> 0.2
    params = AdaptiveParams(ema=0.0, window=2, tolerance=0.01, ramp=0.5, floor_delay=0.5)
    progress, state = _run([2.0] * 11, 11, params)
    assert progress == pytest.approx([0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0])
    assert state.plateaued_steps == 9 and state.history == (2.0, 2.0, 2.0)


def test_plateau_is_relative_improvement_over_the_window():
    assert not is_plateau((5.0, 4.0), window=2, tolerance=0.5)  # not enough values yet
    assert is_plateau((5.0, 4.0, 4.96), window=2, tolerance=0.01)  # 0.8% better: plateau
    assert not is_plateau((5.0, 4.0, 4.9), window=2, tolerance=0.01)  # 2% better
    assert is_plateau((4.0, 4.5), window=1, tolerance=0.0)  # worse counts as plateaued
    assert not is_plateau((4.0, 3.99), window=1, tolerance=0.0)


def test_ema_smooths_the_step_losses_and_keeps_a_window():
    params = AdaptiveParams(ema=0.5, window=1, tolerance=0.01, ramp=1.0, floor_delay=0.5)
    state = AdaptiveState()
    for step, loss in enumerate([4.0, 2.0, 2.0], start=1):
        state = advance(state, loss * 8, 8.0, step, 100, params)
    assert state.ema == 2.5 and state.history == (3.0, 2.5)  # 4 -> 0.5*4 + 0.5*2 = 3 -> 0.5*3 + 0.5*2 = 2.5


def test_progress_never_decreases_and_holds_when_the_loss_improves_again():
    # flat (plateau: advances), then improving (holds), then flat again (advances again)
    params = AdaptiveParams(ema=0.0, window=1, tolerance=0.01, ramp=0.1, floor_delay=0.9)
    losses = [3.0, 3.0, 3.0, 2.0, 1.5, 1.5, 1.5] + [1.5] * 14
    progress, _ = _run(losses, 21, params)  # rate 1 / (0.1 * 20) = 0.5
    assert progress[:8] == pytest.approx([0, 0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    params = AdaptiveParams(ema=0.0, window=1, tolerance=0.01, ramp=0.5, floor_delay=0.9)
    progress, _ = _run(losses, 21, params)  # rate 0.1
    assert progress[:8] == pytest.approx([0, 0, 0.1, 0.2, 0.2, 0.2, 0.3, 0.4])
    assert all(b >= a for a, b in zip(progress, progress[1:]))
    assert progress[-1] == 1.0  # the floor reaches the end weights at the last step


def test_a_step_without_think_tokens_measures_nothing():
    params = AdaptiveParams(ema=0.0, window=1, tolerance=0.01, ramp=0.5, floor_delay=0.5)
    state = advance(AdaptiveState(), 30.0, 10.0, 1, 11, params)
    empty = advance(state, 0.0, 0.0, 2, 11, params)
    assert (empty.ema, empty.history, empty.progress, empty.step) == (3.0, (3.0,), 0.0, 2)
    nan = advance(state, float("nan"), 10.0, 2, 11, params)
    assert (nan.ema, nan.history) == (3.0, (3.0,))


def test_state_round_trips_through_json_exactly():
    params = AdaptiveParams(ema=0.9, window=3, tolerance=0.01, ramp=0.5, floor_delay=0.5)
    _, state = _run([1.0 / 3, 0.1, 0.7, 2.0 / 7, 0.3], 9, params)
    assert AdaptiveState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize("kwargs, message", [
    (dict(ema=1.0), "adaptive_ema"), (dict(window=0), "adaptive_window"), (dict(tolerance=-0.1), "adaptive_tolerance"),
    (dict(ramp=1.5), "adaptive_ramp"), (dict(floor_delay=1.0), "adaptive_floor_delay"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveParams(**kwargs)


def test_config_option_and_validation(tmp_path):
    from scale_vlm.sft_config import ScaleSFTConfig

    args = ScaleSFTConfig(output_dir=str(tmp_path), use_cpu=True, progress_mode="adaptive", adaptive_window=3)
    assert args.adaptive_progress == AdaptiveParams(window=3)
    assert ScaleSFTConfig(output_dir=str(tmp_path), use_cpu=True).adaptive_progress is None  # "steps"
    with pytest.raises(ValueError, match="progress_mode must be one of"):
        ScaleSFTConfig(output_dir=str(tmp_path), use_cpu=True, progress_mode="loss")
    with pytest.raises(ValueError, match="adaptive_tolerance"):
        ScaleSFTConfig(output_dir=str(tmp_path), use_cpu=True, progress_mode="adaptive", adaptive_tolerance=float("nan"))


def test_plot_schedule_says_the_adaptive_progress_is_loss_driven(capsys):
    from scale_vlm.cli import main

    assert main(["plot-schedule", "--progress_mode", "adaptive", "--adaptive_window", "4"]) == 0
    out = capsys.readouterr().out
    assert "loss-driven" in out and "over 4 steps" in out and "    1.00    0.200     0.800" in out


# ------------------------------------------------------------------------------------------- the callback


def _state(global_step, saved=None):
    return SimpleNamespace(global_step=global_step, max_steps=11, stateful_callbacks=saved or {})


def test_callback_accumulates_micro_batches_and_updates_once_per_step():
    callback = AdaptiveProgressCallback(ema=0.0, window=1, tolerance=0.01, ramp=0.5, floor_delay=0.5)
    callback.on_train_begin(None, _state(0), None)
    # two micro-batches of one optimizer step, means 3 and 6: the step's mean is (6 + 6) / (2 + 1) = 4
    callback.record(6.0, 2.0)
    callback.record(6.0, 1.0)
    callback.on_step_end(None, _state(1), None)
    assert callback.progress_state == AdaptiveState(step=1, progress=0.0, ema=4.0, history=(4.0,))
    callback.record(12.0, 3.0)  # flat: a plateau, 1 / (0.5 * 10) = 0.2
    callback.on_step_end(None, _state(2), None)
    assert callback.progress == pytest.approx(0.2)
    # what Trainer writes into trainer_state.json, and what a resumed run restores from it
    saved = json.loads(json.dumps({"AdaptiveProgressCallback": callback.state()}))
    resumed = AdaptiveProgressCallback(**saved["AdaptiveProgressCallback"]["args"])
    resumed.on_train_begin(None, _state(2, saved), None)
    assert resumed.progress_state == callback.progress_state and resumed.params == callback.params


def test_callback_refuses_a_checkpoint_without_its_state():
    callback = AdaptiveProgressCallback()
    with pytest.raises(ValueError, match="no adaptive schedule state"):
        callback.on_train_begin(None, _state(4, {"TrainerControl": {}}), None)
    saved = {"AdaptiveProgressCallback": {"args": {}, "attributes": {"progress_state": AdaptiveState(step=3).to_dict()}}}
    with pytest.raises(ValueError, match="of step 3, its trainer state of step 4"):
        callback.on_train_begin(None, _state(4, saved), None)


# ------------------------------------------------------------------------------------------- a short SCALe run

STEPS = 5
# window 1 without smoothing: each step's decision is the step-over-step change of the logged think loss; the
# tolerance lies between the improvements this run shows, so some steps advance and some hold (asserted below).
ADAPTIVE = dict(progress_mode="adaptive", adaptive_ema=0.0, adaptive_window=1, adaptive_tolerance=0.03,
                adaptive_ramp=0.5, adaptive_floor_delay=0.8)


def _per_step(log_history):
    return {h["step"]: h for h in log_history if "loss" in h and "step" in h}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 5-step adaptive run (checkpoints at 2 and 4) and a fresh trainer resumed from its checkpoint-2."""
    from reliability_support import tiny_model_dir, write_good_jsonl

    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    tmp = tmp_path_factory.mktemp("adaptive")
    ds, root = load_training_dataset(str(write_good_jsonl(tmp / "data", 8)))

    def trainer(out):
        model, processor = load_base(tiny_model_dir())
        # 2 micro-batches of 1 per optimizer step: the state must be updated once per step from both
        args = ScaleSFTConfig(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=1,
                              gradient_accumulation_steps=2, learning_rate=5e-3, save_steps=2, save_strategy="steps",
                              seed=0, use_cpu=True, disable_tqdm=True, logging_nan_inf_filter=False,
                              dataloader_num_workers=0, report_to="none", image_root=root, **ADAPTIVE)
        return ScaleSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)

    full = trainer(tmp / "full")
    full.train()
    resumed = trainer(tmp / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp / "full" / "checkpoint-2"))
    return _per_step(full.state.log_history), _per_step(resumed.state.log_history), full


def test_logged_progress_is_the_pure_update_of_the_logged_think_losses(runs):
    from scale_vlm.schedules import WeightSchedule

    logs, _, trainer = runs
    assert sorted(logs) == list(range(1, STEPS + 1))
    params = AdaptiveParams(ema=0.0, window=1, tolerance=0.03, ramp=0.5, floor_delay=0.8)
    state = AdaptiveState()
    for step in range(1, STEPS + 1):
        # logging_steps=1: loss_think is that step's global think NLL sum / think tokens
        assert logs[step]["schedule_progress"] == state.progress, step
        assert (logs[step]["w_think"], logs[step]["w_answer"]) == WeightSchedule()(state.progress), step
        state = advance(state, logs[step]["loss_think"], 1.0, step, STEPS, params)
    progress = [logs[s]["schedule_progress"] for s in range(1, STEPS + 1)]
    # not vacuous: the think loss improved by 3.6% (hold), then 2.7% (< 3%: advance by 1 / (0.5 * 4)), and the
    # floor (delay 0.8) takes the last step to 1; step 4's advance needs step 2's loss, kept across the resume
    assert progress == [0.0, 0.0, 0.0, 0.5, 1.0], progress
    assert [logs[s]["w_think"] for s in (1, 4, 5)] == pytest.approx([0.8, 0.5, 0.2])
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, AdaptiveProgressCallback))
    assert callback.progress_state == state  # the trainer's final state is the replayed one, exactly
    saved = json.loads((Path(trainer.args.output_dir) / "checkpoint-4" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["AdaptiveProgressCallback"]["attributes"]["progress_state"]["step"] == 4


def test_resumed_run_has_the_weights_of_the_uninterrupted_run(runs):
    full, resumed, _ = runs
    assert sorted(resumed) == list(range(1, STEPS + 1))  # the checkpoint's history + the resumed steps
    for step in range(3, STEPS + 1):
        got, want = resumed[step], full[step]
        for key in ("schedule_progress", "w_think", "w_answer"):
            assert got[key] == want[key], (step, key, got[key], want[key])
        assert got["loss_think"] == pytest.approx(want["loss_think"], rel=1e-5)
