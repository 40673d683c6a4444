"""scale_vlm.report: statistics over seeds, tables, GRPO reward windows and figures, against hand-computed values."""

import math

import pytest

from scale_vlm.report import (
    first_last_window,
    markdown_table,
    mean_std,
    over_seeds,
    plot_accuracy_vs_time,
    plot_reward_curve,
    plot_training_curves,
    reward_curve,
    seed_stats,
    window_means,
)


def test_seed_stats_mean_and_sample_std():
    stats = seed_stats([0.5, 0.6, 0.8])
    # mean 1.9 / 3; sample variance ((-0.1333)^2 + (-0.0333)^2 + 0.1667^2) / 2 = 0.023333
    assert stats["mean"] == pytest.approx(0.633333, abs=1e-6)
    assert stats["std"] == pytest.approx(math.sqrt(0.0233333), abs=1e-6)
    assert (stats["min"], stats["max"], stats["values"]) == (0.5, 0.8, [0.5, 0.6, 0.8])
    assert seed_stats([7])["std"] == 0.0
    with pytest.raises(ValueError):
        seed_stats([])


def test_over_seeds_groups_metrics():
    per_seed = {0: {"a": {"x": 1.0, "y": 10}}, 1: {"a": {"x": 3.0, "y": 30}}}
    stats = over_seeds(per_seed, ["a"], ["x", "y"])
    assert stats["a"]["x"]["mean"] == 2.0 and stats["a"]["x"]["std"] == pytest.approx(math.sqrt(2))
    assert stats["a"]["y"]["values"] == [10.0, 30.0]
    assert mean_std(stats["a"]["x"]) == "2.000 ± 1.414"
    assert mean_std(stats["a"]["y"], 0, " +- ") == "20 +- 14"


def test_markdown_table():
    assert markdown_table(("a", "b"), [[1, "x"], [2.5, "y"]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |"


def test_reward_curve_reads_trl_keys_and_skips_other_rows():
    log = [{"step": 1, "reward": 0.2, "rewards/accuracy_reward/mean": 0.1, "rewards/format_reward/mean": 0.2,
            "completions/mean_length": 40.0, "entropy": 0.05, "frac_reward_zero_std": 0.25, "loss": 0.0},
           {"step": 1, "train_runtime": 3.0}, {"step": 2, "reward": 0.4}]
    assert reward_curve(log) == [{"step": 1, "reward": 0.2, "accuracy": 0.1, "format": 0.2, "completion_length": 40.0,
                                  "entropy": 0.05, "groups_without_signal": 0.25}, {"step": 2, "reward": 0.4}]


def test_window_means_and_first_last():
    curve = [{"step": s, "reward": r} for s, r in zip(range(1, 6), (0.1, 0.3, 0.5, 0.7, 1.0))]
    assert window_means(curve, 2) == [
        {"first_step": 1, "last_step": 2, "mean": pytest.approx(0.2)},
        {"first_step": 3, "last_step": 4, "mean": pytest.approx(0.6)},
        {"first_step": 5, "last_step": 5, "mean": pytest.approx(1.0)}]
    other = [{"step": s, "reward": 0.0} for s in range(1, 4)]
    both = first_last_window([curve, other, []], 2)
    assert both["steps"] == [5, 3]
    assert both["per_run"][0] == {"first": pytest.approx(0.2), "last": pytest.approx(0.85)}
    assert both["pooled"] == {"first": pytest.approx(0.1), "last": pytest.approx(0.425)}
    assert first_last_window([], 2)["pooled"] is None


def test_figures_are_written(tmp_path):
    hist = [{"step": s, "loss_think": 2.0 / s, "loss_answer": 1.0 / s, "w_think": 0.5, "w_answer": 0.5} for s in (1, 2)]
    plot_training_curves({"vanilla": hist, "scale": hist}, tmp_path / "curves.png")
    curve = [{"step": s, "reward": 0.1 * s, "accuracy": 0.0, "format": 0.2} for s in (1, 2, 3)]
    plot_reward_curve(curve, tmp_path / "reward.png")
    point = {"label": "arm", "accuracy": {"mean": 0.5, "std": 0.1}, "seconds": {"mean": 10.0, "std": 1.0}}
    plot_accuracy_vs_time({"a": point}, {"a": [curve]}, {"a": "tab:blue"}, tmp_path / "acc.png", title="t")
    for name in ("curves.png", "reward.png", "acc.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_grpo_reward_curve_script_prints_the_windows_and_the_probe(tmp_path, monkeypatch, capsys):
    """scripts/grpo_reward_curve.py: window means of the logged reward (hand values) and the greedy probe's rows."""
    import json
    import runpy
    import sys
    from pathlib import Path

    log = [{"step": 0, "probe/accuracy": 0.5, "probe/malformed_rate": 0.02, "probe/seconds": 1.0}]
    log += [{"step": s, "reward": r, "rewards/accuracy_reward/mean": r / 2, "rewards/format_reward/mean": 1.0,
             "completions/mean_length": 10.0 * s} for s, r in zip((1, 2, 3, 4), (0.2, 0.4, 0.6, 1.0))]
    log.append({"step": 4, "probe/accuracy": 0.625, "probe/malformed_rate": 0.0, "probe/seconds": 1.0})
    (tmp_path / "log_history.json").write_text(json.dumps(log))
    script = Path(__file__).resolve().parents[1] / "scripts" / "grpo_reward_curve.py"
    monkeypatch.setattr(sys, "argv", ["grpo_reward_curve.py", str(tmp_path), "--window", "2"])
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    windows = [line.split() for line in lines if line.strip()[:1].isdigit() and "-" in line.split()[0]]
    assert [w[0] for w in windows] == ["1-2", "3-4"]
    assert [float(w[1]) for w in windows] == pytest.approx([0.3, 0.8])  # reward
    assert [float(w[2]) for w in windows] == pytest.approx([0.15, 0.4])  # accuracy reward
    probe = lines[lines.index(" step  accuracy  malformed") + 1:]
    assert [row.split() for row in probe] == [["0", "0.500", "0.020"], ["4", "0.625", "0.000"]]
