"""The counting helpers of benchmarks/bench_vs_trl.py: the figures its throughput and loss comparisons rest on."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_vs_trl as bench  # noqa: E402


def test_batch_token_counts_counts_non_padding_inputs_and_shifted_targets():
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        # the first position is never a target (labels are shifted by one); -100 marks prompt and padding
        "labels": torch.tensor([[7, -100, 5, 6, -100], [-100, -100, -100, 8, 9]]),
    }
    assert bench.batch_token_counts(batch) == (9, 4)
    assert bench.batch_token_counts({"attention_mask": batch["attention_mask"]}) == (9, 0)


def test_steady_rate_leaves_out_the_warmup_steps():
    tokens = [100, 100, 200, 300]
    ends = [10.0, 11.0, 13.0, 14.0]  # step 1 ends at 10 s (slow warm-up), the last at 14 s
    # steps 2..4 after one warm-up step: 600 tokens in 14 - 10 s
    assert bench.steady_rate(tokens, ends, warmup=1) == pytest.approx(150.0)
    # after two: 500 tokens in 14 - 11 s
    assert bench.steady_rate(tokens, ends, warmup=2) == pytest.approx(500 / 3)
    assert bench.steady_rate(tokens, ends, warmup=4) is None
    assert bench.steady_rate(tokens, ends, warmup=0) is None
    with pytest.raises(ValueError):
        bench.steady_rate(tokens, ends[:-1], warmup=1)


def test_first_last_loss_reads_the_step_logs_only():
    history = [{"loss": 3.0, "step": 1}, {"grad_norm": 1.0, "step": 1}, {"loss": 2.5, "step": 2},
               {"train_loss": 2.75, "loss": 9.9, "step": 2}]
    assert bench.first_last_loss(history) == (3.0, 2.5, [3.0, 2.5])
    assert bench.first_last_loss([]) == (None, None, [])


def test_prompt_completion_split_keeps_every_turn():
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}
    assistant = {"role": "assistant", "content": [{"type": "text", "text": "<think>t</think><answer>a</answer>"}]}
    assert bench.to_prompt_completion({"messages": [user, assistant]}) == {"prompt": [user], "completion": [assistant]}


def test_ratios_and_goal():
    rows = {"vanilla": {"tokens_per_s_steady": 110.0, "process_peak_bytes": 90, "tokens_per_s_train": 100.0},
            "trl": {"tokens_per_s_steady": 100.0, "process_peak_bytes": 100, "tokens_per_s_train": 125.0}}
    r = bench.ratios(rows)
    assert list(r) == ["vanilla/trl"]
    assert r["vanilla/trl"]["tokens_per_s_steady"] == pytest.approx(1.1)
    assert r["vanilla/trl"]["process_peak_bytes"] == pytest.approx(0.9)
    assert r["vanilla/trl"]["tokens_per_s_train"] == pytest.approx(0.8)
    assert r["vanilla/trl"]["goal_met"]
    rows["vanilla"]["process_peak_bytes"] = 101
    assert not bench.ratios(rows)["vanilla/trl"]["goal_met"]


def test_rotated_orders():
    assert bench._rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert bench._rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert bench._rotated([], 3) == []


def test_benchmark_reports_name_the_machine_as_run_records_do():
    """Every benchmark JSON's ``machine`` (benchmarks/_common.py) holds the run records' fields (CPU model, library
    releases: figures from two CPU kinds are not comparable) plus the threads and the load."""
    import _common

    from scale_vlm.stages import machine

    info = _common.machine("cpu")
    assert {k: info[k] for k in machine()} == machine()
    assert info["torch_threads"] == torch.get_num_threads() and info["gpu"] is None
