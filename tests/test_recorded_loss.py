"""Recorded-loss regression: a few SCALe and vanilla steps from the shipped base at a fixed seed, losses pinned.

A change anywhere on the training path (rendering, segments, collation, the loss, the schedule, the trainer's
normalisers, the fused head) moves these numbers. If a change is meant to move them, rerun this file with
``SCALE_VLM_RECORD=1`` to print the new values and update ``RECORDED`` in the same commit, saying why.
"""

from __future__ import annotations

import os

import pytest

# Per logged step (every step): loss, loss_think, loss_answer. Recorded with torch 2.13 CPU, transformers 5.24.
RECORDED = {
    "scale": [[9.272354, 8.966872, 10.231298], [7.042225, 7.080199, 6.961362], [8.892480, 7.214789, 9.844003],
              [6.774144, 6.212314, 6.923793]],
    "vanilla": [[9.069900, 8.966872, 10.231298], [6.873893, 6.870996, 6.917984], [7.128955, 6.945164, 9.707439],
                [6.453568, 6.378970, 7.476944]],
}
# fp32 on CPU: summation order differs between builds and thread counts, nothing else should.
RTOL = 2e-3


@pytest.fixture(scope="module")
def prepared():
    from scale_vlm.bench.dataset import build_benchmark, to_training_format
    from scale_vlm.data.prepare import prepare_dataset
    from scale_vlm.tiny.shipped import load_base

    _, processor = load_base()
    train = to_training_format(build_benchmark(seed=0, num_train=16, num_test=1)["train"])
    rows, report = prepare_dataset(train, processor, progress=False)
    assert report.kept == 16 and report.num_skipped == 0
    return rows


@pytest.mark.parametrize("method", ["scale", "vanilla"])
def test_recorded_losses(method, prepared, tmp_path):
    import torch

    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    torch.manual_seed(0)
    model, processor = load_base()
    args = ScaleSFTConfig(
        output_dir=str(tmp_path / method), method=method, max_steps=4, per_device_train_batch_size=4,
        learning_rate=2e-3, lr_scheduler_type="constant", seed=0, data_seed=0, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=True,
    )
    trainer = ScaleSFTTrainer(model=model, args=args, train_dataset=prepared, processing_class=processor)
    trainer.train()
    got = [[h["loss"], h["loss_think"], h["loss_answer"]] for h in trainer.state.log_history if "loss" in h]
    if os.environ.get("SCALE_VLM_RECORD"):
        print(f"\n{method!r}: {got!r},")
    assert len(got) == 4
    assert RECORDED[method] is not None, "no recorded losses: run with SCALE_VLM_RECORD=1 and pin them"
    for step, (row, want) in enumerate(zip(got, RECORDED[method]), start=1):
        assert row == pytest.approx(want, rel=RTOL), f"{method} step {step}: {row} != recorded {want}"
