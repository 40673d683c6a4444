"""Stage reuse of ``scale-vlm compare`` and its summary/markdown; the --quick run end to end is slow."""

import json

import pytest

from scale_vlm.compare import (ARMS, CompareConfig, config_hash, format_markdown, run_stage, stage_done,
                               summarize)


def test_run_stage_reuses_finished_and_redoes_changed(tmp_path):
    calls = []

    def fn(folder):
        calls.append(folder)
        (folder / "model.bin").write_text("w")
        return {"train_seconds": 1.5}

    cfg = {"stage": "sft", "lr": 1e-3}
    first = run_stage(tmp_path / "s", cfg, fn)
    second = run_stage(tmp_path / "s", cfg, fn)
    assert len(calls) == 1 and first["reused"] is False and second["reused"] is True
    assert second["results"] == {"train_seconds": 1.5} and second["hash"] == config_hash(cfg)
    third = run_stage(tmp_path / "s", {**cfg, "lr": 2e-3}, fn)  # config changed: redone
    assert len(calls) == 2 and third["reused"] is False


def test_interrupted_stage_is_redone(tmp_path):
    def crash(folder):
        (folder / "partial").write_text("x")
        raise KeyboardInterrupt

    cfg = {"stage": "grpo"}
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "g", cfg, crash)
    assert not stage_done(tmp_path / "g", config_hash(cfg))
    record = run_stage(tmp_path / "g", cfg, lambda folder: {"ok": True})
    assert record["reused"] is False and not (tmp_path / "g" / "partial").exists()


def test_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_config_validation_and_quick():
    cfg = CompareConfig(quick=True, seeds=[0, 1])
    assert cfg.sft_steps < 20 and cfg.grpo_steps < 10
    assert CompareConfig(seeds="0,1,2").seeds == [0, 1, 2]
    with pytest.raises(ValueError):
        CompareConfig(grpo_batch_size=10, num_generations=4)
    with pytest.raises(ValueError):
        CompareConfig(seeds=[1, 1])


def _arm(acc, sft_s, grpo_s):
    return {"accuracy": acc, "malformed_rate": 0.1, "mean_think_tokens": 50.0, "train_seconds": sft_s + grpo_s,
            "sft_seconds": sft_s, "grpo_seconds": grpo_s, "sft_supervised_tokens": 100, "grpo_generated_tokens": 10,
            "grpo_curve": [{"step": 1, "reward": 0.5, "accuracy": 0.2}, {"step": 2, "reward": 0.8, "accuracy": 0.4}]}


def test_summary_ratio_and_markdown():
    per_seed = {s: {"sft": _arm(0.5, 10, 0), "scale": _arm(0.6 + s / 10, 10, 0), "sft_grpo": _arm(0.6, 10, 30),
                    "scale_grpo": _arm(0.7, 10, 30)} for s in (0, 1)}
    summary = summarize(per_seed)
    assert summary["scale"]["accuracy_mean"] == pytest.approx(0.65)
    assert summary["scale"]["time_vs_sft_grpo"] == pytest.approx(0.25)
    assert summary["sft_grpo"]["time_vs_sft_grpo"] == pytest.approx(1.0)
    results = {"config": json.loads(json.dumps(CompareConfig().__dict__)), "seeds": [0, 1], "summary": summary,
               "per_seed": {str(s): v for s, v in per_seed.items()}, "scale_sft_time_over_sft_grpo_time": 0.25}
    md = format_markdown(results)
    assert "| arm | accuracy | malformed rate | think tokens | training time (s) | time relative to SFT+GRPO |" in md
    assert all(summary[a]["label"] in md for a in ARMS)
    assert "0.500 -> 0.800" in md


@pytest.mark.slow
def test_compare_quick_end_to_end(tmp_path):
    import torch

    from scale_vlm.bench.dataset import corpus_texts
    from scale_vlm.compare import run_compare
    from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny

    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=20), vocab_size=400, num_layers=2)
    save_tiny(model, processor, tmp_path / "base")
    cfg = CompareConfig(quick=True, output_dir=str(tmp_path / "out"), base_model=str(tmp_path / "base"),
                        progress=False)
    results = run_compare(cfg)
    for name in ("results.json", "results.md", "accuracy_vs_time.png"):
        assert (tmp_path / "out" / name).is_file()
    assert set(results["summary"]) == set(ARMS)
    again = run_compare(cfg)  # every stage reused
    assert all(set(arm["reused_stages"]) == ({"sft", "grpo", "eval"} if name.endswith("_grpo") else {"sft", "eval"})
               for name, arm in again["per_seed"]["0"].items())
