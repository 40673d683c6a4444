"""A SCALe run killed after a checkpoint and resumed gives the schedule weights and losses of an uninterrupted run.

Tolerance: the schedule weights ``w_think`` / ``w_answer`` are a pure function of ``global_step`` and ``max_steps``
(both restored from the checkpoint), so they must be exactly equal. Losses are compared with ``rel=1e-5``: Trainer
restores the model, optimizer, scheduler, RNG states and the data order (same sampler seed, already-seen batches
skipped), so a resumed step computes the same float32 operations on the same batch; the only allowed differences
are CPU float non-determinism (thread scheduling of reductions), which in practice gives bitwise-equal or ~1e-7
relative differences.

``test_resume_after_sigkill`` runs the real CLI (``python -m scale_vlm.cli sft``) in a subprocess, SIGKILLs it as
soon as a checkpoint appears, and resumes it, then checks that a resume with other data is refused; it is marked
slow (five Python start-ups). The in-process variant
runs in the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from reliability_support import PYTHON, REPO_ROOT, subprocess_env, tiny_model_dir, write_good_jsonl

KEYS = ("w_think", "w_answer", "loss", "loss_think", "loss_answer")
REL = 1e-5
STEPS = 6
# The subprocess run is longer, so that the kill lands mid-run even when a step takes milliseconds.
KILL_STEPS = 40


def _per_step(log_history: list[dict]) -> dict[int, dict]:
    return {h["step"]: {k: h[k] for k in KEYS} for h in log_history if "loss" in h and "step" in h}


def _compare(resumed: dict[int, dict], full: dict[int, dict], steps) -> float:
    worst = 0.0
    for step in steps:
        got, want = resumed[step], full[step]
        assert (got["w_think"], got["w_answer"]) == (want["w_think"], want["w_answer"]), (step, got, want)
        for key in ("loss", "loss_think", "loss_answer"):
            assert got[key] == pytest.approx(want[key], rel=REL), (step, key, got, want)
            worst = max(worst, abs(got[key] - want[key]) / abs(want[key]))
    return worst


def _config(out, **kw):
    from scale_vlm.sft_config import ScaleSFTConfig

    base = dict(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=2, learning_rate=5e-3,
                save_steps=2, save_strategy="steps", seed=0, use_cpu=True, disable_tqdm=True,
                logging_nan_inf_filter=False, dataloader_num_workers=0, schedule="linear", normalization="sample")
    base.update(kw)
    return ScaleSFTConfig(**base)


def test_resume_in_process_matches_uninterrupted(tmp_path):
    """Train 6 steps; separately train, stop after the step-2 checkpoint, resume it from a fresh model."""
    from transformers import TrainerCallback

    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    data = write_good_jsonl(tmp_path / "data", 8)  # 8 examples, batch 2: 4 steps per epoch, so resume crosses one
    ds, root = load_training_dataset(str(data))

    def trainer(out, callbacks=()):
        model, processor = load_base(tiny_model_dir())
        return ScaleSFTTrainer(model=model, args=_config(out, image_root=root, save_steps=3), train_dataset=ds,
                               processing_class=processor, callbacks=list(callbacks))

    full = trainer(tmp_path / "full")
    full.train()
    want = _per_step(full.state.log_history)
    assert sorted(want) == list(range(1, STEPS + 1))

    class StopAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            control.should_training_stop = True

    first = trainer(tmp_path / "cut", [StopAfterCheckpoint()])
    first.train()
    assert first.state.global_step == 3 and (tmp_path / "cut" / "checkpoint-3").is_dir()
    resumed = trainer(tmp_path / "cut")
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-3"))
    got = _per_step(resumed.state.log_history)
    assert sorted(got) == list(range(1, STEPS + 1))  # the checkpoint's history + the resumed steps
    _compare(got, want, range(4, STEPS + 1))
    # the weights really move over the run, so equality of the schedule is not vacuous
    assert want[1]["w_think"] == 0.8 and want[STEPS]["w_think"] == pytest.approx(0.2)


def _sft_cmd(model, data, out, *extra):
    return [PYTHON, "-m", "scale_vlm.cli", "sft", "--model_name_or_path", str(model), "--dataset_name", str(data),
            "--output_dir", str(out), "--max_steps", str(KILL_STEPS), "--per_device_train_batch_size", "2",
            "--learning_rate", "5e-3", "--save_steps", "2", "--save_strategy", "steps", "--seed", "0",
            "--use_cpu", "true", "--disable_tqdm", "true", "--schedule", "linear", "--logging_nan_inf_filter", "false",
            "--dataloader_num_workers", "0", *extra]


def _run(cmd, timeout=300):
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    model = tiny_model_dir()
    data = write_good_jsonl(tmp_path / "data", 8)
    # Uninterrupted reference run.
    _run(_sft_cmd(model, data, tmp_path / "full"))
    want = _per_step(json.loads((tmp_path / "full" / f"checkpoint-{KILL_STEPS}" / "trainer_state.json").read_text())["log_history"])
    assert (tmp_path / "full" / "model.safetensors").is_file()

    # The same run, killed with SIGKILL once the step-2 checkpoint is complete (trainer_state.json is written last).
    out = tmp_path / "cut"
    proc = subprocess.Popen(_sft_cmd(model, data, out), env=subprocess_env(), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 240
    try:
        while not marker.exists():
            assert proc.poll() is None, "the run ended before writing its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        time.sleep(0.2)  # let the rng_state/optimizer files of that checkpoint settle if written after
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model.safetensors").exists()
    # the newest checkpoint that was completely written (Trainer writes trainer_state.json last)
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert last < KILL_STEPS

    # Restarting without --resume_from_checkpoint is refused (the folder holds another run) ...
    refused = subprocess.run(_sft_cmd(model, data, out), env=subprocess_env(), capture_output=True, text=True,
                             timeout=300, cwd=REPO_ROOT)
    assert refused.returncode != 0 and "--resume_from_checkpoint" in refused.stderr
    # ... resuming from the last checkpoint finishes the run.
    _run(_sft_cmd(model, data, out, "--resume_from_checkpoint", "true"))
    state = json.loads((out / f"checkpoint-{KILL_STEPS}" / "trainer_state.json").read_text())
    got = _per_step(state["log_history"])
    assert sorted(got) == list(range(1, KILL_STEPS + 1))
    worst = _compare(got, want, range(last + 1, KILL_STEPS + 1))
    print(f"resumed from checkpoint-{last}: max relative loss deviation {worst:.3g}")
    assert (out / "model.safetensors").is_file() and not list(out.glob("pytorch_model*.bin"))  # weights: safetensors only

    # The same folder with other data: resuming from this run's checkpoint is refused (exit 2, one readable line),
    # and the checkpoint is left as it was.
    other = write_good_jsonl(tmp_path / "other", 6)
    stale = subprocess.run(_sft_cmd(model, other, out, "--resume_from_checkpoint", "true"), env=subprocess_env(),
                           capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert stale.returncode == 2, stale.stderr[-3000:]
    assert f"refusing to resume from {out / f'checkpoint-{KILL_STEPS}'}" in stale.stderr
    assert "the training data differ" in stale.stderr and "Traceback" not in stale.stderr
