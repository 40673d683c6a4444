"""Stage reuse of ``scale-vlm compare`` and its summary/markdown; the --quick run end to end is slow."""

import json
import platform
from pathlib import Path

import pytest
import torch

from scale_vlm import stages
from scale_vlm.compare import ARMS, CompareConfig
from scale_vlm.compare.summary import (
    format_markdown,
    grpo_prompt_share,
    grpo_reward_windows,
    paired_differences,
    summarize,
)
from scale_vlm.stages import config_hash, run_stage, stage_done, stage_hash


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
    assert second["results"] == {"train_seconds": 1.5} and second["hash"] == stage_hash(cfg)
    third = run_stage(tmp_path / "s", {**cfg, "lr": 2e-3}, fn)  # config changed: redone
    assert len(calls) == 2 and third["reused"] is False


def test_interrupted_stage_is_redone(tmp_path):
    def crash(folder):
        (folder / "partial").write_text("x")
        raise KeyboardInterrupt

    cfg = {"stage": "grpo"}
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "g", cfg, crash)
    assert not stage_done(tmp_path / "g", stage_hash(cfg))
    record = run_stage(tmp_path / "g", cfg, lambda folder: {"ok": True})
    assert record["reused"] is False and not (tmp_path / "g" / "partial").exists()


@pytest.mark.parametrize("changed", [{"version": "9.9.9"}, {"commit": "0" * 40}, {"commit": None}])
def test_stage_is_redone_when_the_code_changes(tmp_path, monkeypatch, changed):
    """The package version and the git commit are part of the stage hash: a finished stage is not reused by other
    code, even with the same config."""
    monkeypatch.setattr(stages, "code_identity", lambda: {"version": "1.0.0", "commit": "a" * 40})
    calls = []
    cfg = {"stage": "sft"}
    first = run_stage(tmp_path / "s", cfg, lambda folder: calls.append(folder) or {})
    assert first["code"] == {"version": "1.0.0", "commit": "a" * 40}
    assert run_stage(tmp_path / "s", cfg, lambda folder: calls.append(folder) or {})["reused"] is True
    before = stage_hash(cfg)
    monkeypatch.setattr(stages, "code_identity", lambda: {"version": "1.0.0", "commit": "a" * 40, **changed})
    assert stage_hash(cfg) != before
    again = run_stage(tmp_path / "s", cfg, lambda folder: calls.append(folder) or {})
    assert again["reused"] is False and len(calls) == 2


def test_code_identity_names_the_version_and_the_commit(monkeypatch):
    from scale_vlm import __version__

    assert stages.code_identity()["version"] == __version__
    monkeypatch.setattr(stages, "git_commit", lambda: "c" * 40)
    assert stages.code_identity() == {"version": __version__, "commit": "c" * 40}


def test_machine_names_the_cpu_model_and_the_library_releases(monkeypatch, tmp_path):
    import transformers
    import trl

    m = stages.machine()
    assert (m["torch"], m["transformers"], m["trl"]) == (torch.__version__, transformers.__version__, trl.__version__)
    assert m["python"] == platform.python_version() and m["gpu"] is None  # the suite runs on CPU
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t: avx2\n")
    real_path = stages.Path
    monkeypatch.setattr(stages, "Path", lambda p, *a: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p, *a))
    assert stages.machine()["cpu"] == "AMD EPYC 9B14"
    monkeypatch.setattr(stages, "Path", lambda p, *a: real_path(tmp_path / "absent"))  # no /proc (macOS, Windows)
    assert stages.machine()["cpu"] == (platform.processor() or platform.machine())


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
    with pytest.raises(ValueError, match="--save_steps -1: give a positive interval, or 0 for no checkpoints"):
        CompareConfig(save_steps=-1)


def test_grpo_prompts_of_the_builtin_benchmark_are_held_out_from_sft_by_default():
    """GRPO's questions are the benchmark's own GRPO stream (none is an SFT question, as RL data is in cold-start
    pipelines); --grpo_prompts sft_rows gives GRPO the first SFT questions (the comparison's earlier behaviour)."""
    from scale_vlm.compare.pipeline import builtin_data

    def split(**options):
        data = builtin_data(CompareConfig(**{"num_train": 40, "num_grpo_prompts": 6, "num_test": 3, **options}), seed=0)
        sft = [row["messages"][0]["content"][-1]["text"] for row in data["sft"]]
        grpo = [prompt[-1]["content"][-1]["text"] for prompt in data["grpo"]["prompt"]]
        return sft, grpo, list(data["grpo"]["id"])

    sft, grpo, ids = split()
    assert len(grpo) == 6 and all(i.startswith("grpo-0-") for i in ids)
    assert not set(grpo) & set(sft)
    assert split(num_train=60)[1] == grpo  # the GRPO stream does not depend on how many SFT rows there are
    sft, grpo, ids = split(grpo_prompts="sft_rows")
    assert grpo == sft[:6] and all(i.startswith("train-0-") for i in ids)
    with pytest.raises(ValueError, match="--num_grpo_prompts 50 cannot exceed --num_train 40 with --grpo_prompts sft_rows"):
        CompareConfig(num_train=40, num_grpo_prompts=50, grpo_prompts="sft_rows")
    assert CompareConfig(num_train=40, num_grpo_prompts=50).grpo_prompts == "held_out"  # held out: no such limit
    with pytest.raises(ValueError, match="--grpo_prompts 'test': choose one of held_out, sft_rows"):
        CompareConfig(grpo_prompts="test")


def test_quick_sets_only_defaults_and_reports_what_it_set(monkeypatch):
    """--quick replaces an option left at its default and keeps one the user gave (no min(), no overwrite); the
    checks after it see the values the run uses; run_compare says exactly what it set, before any stage runs."""
    from scale_vlm.compare import pipeline
    from scale_vlm.compare.config import QUICK

    every = {k: v for k, v in QUICK.items() if k != "num_generations"}  # quick's 4 is the default: nothing to set
    assert CompareConfig(quick=True).quick_settings == every
    assert CompareConfig().quick_settings == {} and CompareConfig().sft_steps == 120
    cfg = CompareConfig(quick=True, max_new_tokens=300, sft_steps=3, grpo_batch_size=12, max_completion_length=20)
    assert (cfg.max_new_tokens, cfg.sft_steps, cfg.grpo_batch_size, cfg.max_completion_length) == (300, 3, 12, 20)
    assert (cfg.num_train, cfg.num_grpo_prompts, cfg.num_test, cfg.sft_batch_size, cfg.grpo_steps) == (64, 16, 20, 8, 2)
    assert cfg.quick_settings == {"num_train": 64, "num_grpo_prompts": 16, "num_test": 20, "sft_batch_size": 8,
                                  "grpo_steps": 2}
    with pytest.raises(ValueError, match=r"--grpo_batch_size 8 \(set by --quick\) must be a multiple of "
                                         r"--num_generations 3: pass e.g. --grpo_batch_size 9"):
        CompareConfig(quick=True, num_generations=3)
    with pytest.raises(ValueError, match=r"--num_grpo_prompts 16 \(set by --quick\) cannot exceed --num_train 10 "
                                         r"with --grpo_prompts sft_rows"):
        CompareConfig(quick=True, num_train=10, grpo_prompts="sft_rows")
    # on the command line an option given at its default value is the user's too, and the checks see it
    from trl import TrlParser

    from scale_vlm.cli.common import parse

    (given,) = parse(TrlParser((CompareConfig,)), ["--quick", "--sft_steps", "120", "--num_train", "2000"])
    assert (given.sft_steps, given.num_train, given.num_test) == (120, 2000, 20)
    assert "sft_steps" not in given.quick_settings and "num_train" not in given.quick_settings

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop

    monkeypatch.setattr(pipeline, "base_model_dir", stop)  # the first stage: nothing is trained
    said = []
    with pytest.raises(Stop):
        pipeline.run_compare(cfg, say=said.append)
    assert said == ["--quick set --num_train 64, --num_grpo_prompts 16, --num_test 20, --sft_batch_size 8, "
                    "--grpo_steps 2 (options you give yourself are kept)"]
    said.clear()
    with pytest.raises(Stop):
        pipeline.run_compare(CompareConfig(output_dir=cfg.output_dir), say=said.append)
    assert said == []


def test_compare_warns_when_a_generation_budget_would_cut_the_traces(monkeypatch, tmp_path):
    """At the long-trace regime of the demo the default budgets (200 evaluation, 160 GRPO tokens) are shorter than
    the training responses: run_compare says so, naming both flags and 1.5x the longest response, before any stage
    runs; at the templated defaults, with budgets that fit, or under --quick it says nothing."""
    from scale_vlm.compare import pipeline
    from scale_vlm.tiny.shipped import SHIPPED_BASE

    long_traces = dict(trace_verbosity=0, trace_repeat=3, trace_entropy=2, num_train=100)
    warnings = pipeline.budget_warnings(CompareConfig(**long_traces), SHIPPED_BASE, sample=100)
    assert [w.split()[0] for w in warnings] == ["--max_new_tokens", "--max_completion_length"]
    longest = int(warnings[0].split("(")[1].split()[0])
    assert 400 < longest < 700 and f"pass --max_new_tokens {int(1.5 * longest)} (1.5x)" in warnings[0]
    assert pipeline.budget_warnings(CompareConfig(**long_traces, max_new_tokens=longest, max_completion_length=longest),
                                    SHIPPED_BASE, sample=100) == []
    assert pipeline.budget_warnings(CompareConfig(num_train=100), SHIPPED_BASE, sample=100) == []

    # The user's data: the longest of its first responses (not the first or the mean; an unreadable row skipped,
    # the SFT stage names it), here a trace far longer than the default budgets.
    from transformers import AutoTokenizer

    short, long = "<think>two dots</think><answer>2</answer>", "<think>" + "count the dots again " * 60 + \
        "</think><answer>3</answer>"
    rows = [{"prompt": "How many?", "completion": text} for text in (short, long, "", short)]
    data = tmp_path / "user"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokens = len(AutoTokenizer.from_pretrained(SHIPPED_BASE)(long, add_special_tokens=False)["input_ids"])
    user = pipeline.budget_warnings(CompareConfig(dataset_name=str(data), num_train=4), SHIPPED_BASE)
    assert [w.split()[0] for w in user] == ["--max_new_tokens", "--max_completion_length"]
    assert f"({tokens} tokens in the first 3 readable rows of {data} 'train')" in user[0]
    assert f"pass --max_completion_length {int(1.5 * tokens)} (1.5x)" in user[1]
    assert pipeline.budget_warnings(CompareConfig(dataset_name=str(data), num_train=1), SHIPPED_BASE) == []

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(pipeline, "kept_or_run_seed", stop)  # after the check: nothing is trained
    for cfg, expected in ((CompareConfig(**long_traces, output_dir=str(tmp_path / "a")), 2),
                          (CompareConfig(**long_traces, quick=True, output_dir=str(tmp_path / "b")), 0),
                          (CompareConfig(dataset_name=str(data), num_train=4, output_dir=str(tmp_path / "c")), 2)):
        said = []
        with pytest.raises(Stop):
            pipeline.run_compare(cfg, say=said.append)
        assert len([line for line in said if line.startswith("warning: --max")]) == expected


def test_apply_quick_refuses_a_name_that_is_not_an_option():
    from scale_vlm.knobs import apply_quick

    with pytest.raises(ValueError, match="quick values name sft_stepz: not options of CompareConfig"):
        apply_quick(CompareConfig(), {"sft_stepz": 1})


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
    # the paper's questions, paired per seed (SCALe-SFT 0.6 / 0.7 against 0.5 and 0.6 / 0.6 ...)
    paired = {(d["arm"], d["minus"]): d for d in paired_differences(per_seed)}
    assert paired["scale", "sft"]["values"] == pytest.approx([0.1, 0.2])
    assert paired["scale", "sft"]["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert paired["scale_grpo", "scale"]["values"] == pytest.approx([0.1, 0.0])
    assert paired["scale", "sft_grpo"]["values"] == pytest.approx([0.0, 0.1])
    assert paired["sft_grpo", "sft"]["mean"] == pytest.approx(0.1)
    assert "| SCALe-SFT - vanilla SFT: does SCALe beat vanilla SFT? | +0.100, +0.200 | +0.150 +- 0.071 |" in md
    assert "| SCALe-SFT -> GRPO - SCALe-SFT: what GRPO adds after SCALe-SFT | +0.100, +0.000 | +0.050 +- 0.071 |" in md
    # the windowed means the README quotes: 24 GRPO steps by default, so the first vs the last 8 (here both steps)
    assert "GRPO mean reward, first vs last 8 of 24 steps:" in md
    assert "- pooled over all 4 GRPO runs: 0.650 -> 0.650" in md
    assert "Greedy probe" not in md  # no probe asked for
    # the greedy probe's rows, first -> last with their range, per GRPO arm and seed
    per_seed[1]["scale_grpo"]["grpo_probe"] = [{"step": 0, "accuracy": 0.55, "malformed_rate": 0.02, "seconds": 3.0},
                                               {"step": 4, "accuracy": 0.61, "malformed_rate": 0.0, "seconds": 3.0},
                                               {"step": 8, "accuracy": 0.58, "malformed_rate": 0.01, "seconds": 3.0}]
    results["config"].update(grpo_probe_every=4, grpo_probe_size=50)
    md = format_markdown({**results, "per_seed": {str(s): v for s, v in per_seed.items()}})
    assert "Greedy probe: accuracy on the first 50 test questions, greedy as in the evaluation, before GRPO and every 4" in md
    assert ("- SCALe-SFT -> GRPO, seed 1: 0.550 -> 0.580 (min 0.550, max 0.610, 3 probes, malformed 0.020 -> 0.010)"
            in md)
    assert md.count("probes, malformed") == 1
    assert "cut off by the generation budget" not in md  # rows without the rate (older records) or none cut off
    per_seed[1]["scale_grpo"]["grpo_probe"][1]["budget_hit_rate"] = 0.04
    md = format_markdown({**results, "per_seed": {str(s): v for s, v in per_seed.items()}})
    assert ("3 probes, malformed 0.020 -> 0.010, up to 0.040 of its answers cut off by the generation budget)" in md)


def _curve(rewards):
    return [{"step": i + 1, "reward": r} for i, r in enumerate(rewards)]


def test_grpo_reward_windows_pool_every_run():
    """First vs last third of the steps, per GRPO arm and pooled over both arms and all seeds (hand-computed)."""
    results = {"config": {"grpo_steps": 6}, "seeds": [0, 1], "per_seed": {
        "0": {"sft_grpo": {"grpo_curve": _curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])},
              "scale_grpo": {"grpo_curve": _curve([0.0, 0.0, 0.1, 0.1, 0.9, 0.9])}},
        "1": {"sft_grpo": {"grpo_curve": _curve([0.3, 0.3, 0.3, 0.3, 0.3, 0.7])},
              "scale_grpo": {"grpo_curve": _curve([0.2, 0.4, 0.0, 0.0, 0.4, 0.4])}},
    }}
    windows = grpo_reward_windows(results)
    # the reward curves of the two arms of a seed share the prompts: their correlation over steps (numpy's corrcoef)
    shared = grpo_prompt_share(results, key="reward")
    assert shared["0"] == pytest.approx(0.8722735, abs=1e-6) and shared["1"] == pytest.approx(0.4152274, abs=1e-6)
    assert windows["all"]["window"] == 2 and windows["all"]["steps"] == [6, 6, 6, 6]
    assert windows["sft_grpo"]["pooled"] == pytest.approx({"first": (0.1 + 0.2 + 0.3 + 0.3) / 4,
                                                           "last": (0.5 + 0.6 + 0.3 + 0.7) / 4})
    assert windows["scale_grpo"]["per_run"][1] == pytest.approx({"first": 0.3, "last": 0.4})
    assert windows["all"]["pooled"] == pytest.approx({"first": 1.5 / 8, "last": 4.7 / 8})


def test_grpo_stage_keeps_the_probes_time_out_of_training_time(monkeypatch, tmp_path):
    """A GRPO stage's train_seconds is the run's time less the greedy probe's (which it reports on its own): every
    probe row of the log, those a resumed run got back from its checkpoint included. The stage checkpoints every
    --save_steps and resumes from the last checkpoint."""
    from types import SimpleNamespace

    from scale_vlm import drivers
    from scale_vlm.compare import pipeline

    seen = {}
    # the step-0 probe ran before a checkpoint, the later ones after the resume (the probe object saw only those)
    history = [{"step": 0, "probe/seconds": 1.0}, {"step": 1}, {"step": 5, "probe/seconds": 2.25}]

    def fake_train_grpo(model_dir, args, prompts, callbacks=None, resume=False):
        for probe in callbacks:
            seen["probe"] = (probe.every, len(probe.examples), probe.max_new_tokens)
            probe.seconds = 2.25
        seen["checkpoints"] = (args.save_strategy, args.save_steps, args.save_total_limit, resume)
        trainer = SimpleNamespace(generated_tokens=7, state=SimpleNamespace(log_history=history))
        return SimpleNamespace(seconds=10.0, trainer=trainer, log_history=history, save=lambda folder: folder)

    monkeypatch.setattr(drivers, "train_grpo", fake_train_grpo)
    cfg = CompareConfig(grpo_probe_every=5, max_new_tokens=33, progress=False, save_steps=7)
    result = pipeline.grpo_stage(cfg, 0, tmp_path / "sft", None, tmp_path / "grpo", ["q1", "q2"])
    assert seen["probe"] == (5, 2, 33) and seen["checkpoints"] == ("steps", 7, 1, True)
    assert result["train_seconds"] == pytest.approx(6.75) and result["probe_seconds"] == pytest.approx(3.25)
    pipeline.grpo_stage(CompareConfig(save_steps=0, progress=False), 0, tmp_path / "sft", None, tmp_path / "g0")
    assert seen["checkpoints"][0] == "no" and seen["checkpoints"][3] is False


def test_an_interrupted_comparison_resumes_its_training_stage_in_place(monkeypatch, tmp_path):
    """A rerun of a seed interrupted during SFT (SCALe) reuses the finished SFT (vanilla) stage and hands the
    unfinished one its folder back, with checkpoints every --save_steps and resume on; --save_steps 0 turns both
    off (the stage then starts again from step 0, in its folder)."""
    from scale_vlm.compare import pipeline

    calls, interrupt = [], ["sft_scale"]

    def fake_sft_stage(args, base_dir, train_ds, model_dir, keep_trainer_state=False, resume=False):
        calls.append((Path(model_dir).parent.name, args.save_strategy, args.save_steps, resume))
        if Path(model_dir).parent.name in interrupt:
            interrupt.clear()
            (Path(args.output_dir) / "checkpoint-3").mkdir(parents=True)
            raise KeyboardInterrupt
        return {"train_seconds": 1.0, "input_tokens": 1, "supervised_tokens": 1, "log_history": []}

    def fake_grpo_stage(cfg, seed, sft_model, prompts_ds, out, probe_examples=()):
        return {"train_seconds": 1.0, "probe_seconds": 0.0, "generated_tokens": 1, "log_history": []}

    monkeypatch.setattr(pipeline, "sft_stage", fake_sft_stage)
    monkeypatch.setattr(pipeline, "grpo_stage", fake_grpo_stage)
    monkeypatch.setattr(pipeline, "evaluate_stage", lambda *a, **k: {"accuracy": 0.5})
    small = dict(num_train=8, num_grpo_prompts=4, num_test=4, progress=False)
    cfg = CompareConfig(save_steps=9, **small)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_seed(cfg, 0, tmp_path, "base", "base-id")
    arms = pipeline.run_seed(cfg, 0, tmp_path, "base", "base-id")
    assert calls == [("sft_vanilla", "steps", 9, True), ("sft_scale", "steps", 9, True),
                     ("sft_scale", "steps", 9, True)]  # vanilla reused; SCALe resumed
    assert (tmp_path / "seed0" / "sft_scale" / "trainer" / "checkpoint-3").is_dir()
    assert not list((tmp_path / "seed0").glob("*.old-*"))
    assert (arms["sft"]["reused_stages"], arms["scale"]["reused_stages"]) == (["sft"], [])
    calls.clear()
    pipeline.run_seed(CompareConfig(save_steps=0, **small), 1, tmp_path, "base", "base-id")
    assert calls == [("sft_vanilla", "no", 500, False), ("sft_scale", "no", 500, False)]  # 500: the unused default


@pytest.mark.slow
def test_compare_quick_end_to_end(tmp_path):
    import torch

    from scale_vlm.compare import run_compare
    from scale_vlm.tiny.corpus import corpus_texts
    from scale_vlm.tiny.model import build_tiny_qwen2_vl, save_tiny

    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=20), vocab_size=400, num_layers=2)
    save_tiny(model, processor, tmp_path / "base")
    cfg = CompareConfig(quick=True, output_dir=str(tmp_path / "out"), base_model=str(tmp_path / "base"),
                        progress=False, grpo_probe_every=1, grpo_probe_size=4)
    results = run_compare(cfg)
    for name in ("results.json", "results.md", "accuracy_vs_time.png"):
        assert (tmp_path / "out" / name).is_file()
    assert set(results["summary"]) == set(ARMS)
    assert results["markdown"] == (tmp_path / "out" / "results.md").read_text()
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["grpo_reward_windows"]["all"]["window"] == 1
    assert [(d["arm"], d["minus"]) for d in written["paired_accuracy"]][0] == ("scale", "sft")
    assert written["quick_settings"] == cfg.quick_settings and written["quick_settings"]["num_train"] == 64
    # the greedy probe: before GRPO and after each of its 2 steps; its time kept out of the GRPO stage's time
    for arm in ("sft_grpo", "scale_grpo"):
        assert [row["step"] for row in written["per_seed"]["0"][arm]["grpo_probe"]] == [0, 1, 2]
    # before GRPO the probe evaluates the SFT model on the first 4 test questions, as the SFT arm's evaluation did
    rows = (tmp_path / "out" / "seed0" / "eval_sft" / "predictions.jsonl").read_text().splitlines()[:4]
    assert written["per_seed"]["0"]["sft_grpo"]["grpo_probe"][0]["accuracy"] == pytest.approx(
        sum(json.loads(row)["correct"] for row in rows) / 4)
    stage = json.loads((tmp_path / "out" / "seed0" / "grpo_vanilla" / "stage.json").read_text())
    assert stage["results"]["probe_seconds"] > 0
    assert stage["results"]["train_seconds"] == pytest.approx(
        written["per_seed"]["0"]["sft_grpo"]["grpo_seconds"])
    again = run_compare(cfg)  # every stage reused
    assert all(set(arm["reused_stages"]) == ({"sft", "grpo", "eval"} if name.endswith("_grpo") else {"sft", "eval"})
               for name, arm in again["per_seed"]["0"].items())


def test_records_dir_keeps_each_seed_and_takes_it_back(monkeypatch, tmp_path):
    """--records_dir: a run keeps each finished seed's record; a later run with the same settings takes the
    recorded seeds from there and runs only the others; a record of other settings is refused, naming them."""
    from scale_vlm.compare import pipeline

    ran = []

    def fake_seed(cfg, seed, out, base_dir, base_id):
        ran.append(seed)
        return {"sft": _arm(0.5, 10, 0), "scale": _arm(0.6 + seed / 10, 10, 0), "sft_grpo": _arm(0.6, 10, 30),
                "scale_grpo": _arm(0.7, 10, 30)}

    monkeypatch.setattr(pipeline, "run_seed", fake_seed)
    monkeypatch.setattr(pipeline, "base_model_dir", lambda base, out: ("base", "shipped:test"))
    monkeypatch.setattr(pipeline, "budget_warnings", lambda cfg, base_dir: [])  # the fake base has no tokenizer
    monkeypatch.setattr(pipeline, "plot_results", lambda results, path: None)
    records = tmp_path / "records"
    common = dict(records_dir=str(records), grpo_steps=2, progress=False)
    pipeline.run_compare(CompareConfig(seeds=[0], output_dir=str(tmp_path / "a"), **common))
    kept = json.loads((records / "seed0.json").read_text())
    assert ran == [0] and kept["seed"] == 0 and kept["cpu_seconds"] >= 0 and "commit" in kept
    assert kept["machine"]["torch"] == torch.__version__ and kept["machine"]["cpu"]
    assert kept["arms"]["scale"]["accuracy"] == pytest.approx(0.6)
    said = []
    both = pipeline.run_compare(CompareConfig(seeds=[0, 1], output_dir=str(tmp_path / "b"), **common), say=said.append)
    assert ran == [0, 1]  # seed 0 taken from its record, seed 1 run
    assert [line for line in said if line.startswith("seed 0: taken from")]
    assert both["summary"]["scale"]["accuracy_mean"] == pytest.approx(0.65)
    assert (records / "seed1.json").is_file()
    with pytest.raises(ValueError, match=r"seed0.json holds seed 0 of a comparison with other grpo settings"):
        pipeline.run_compare(CompareConfig(seeds=[0], output_dir=str(tmp_path / "c"), **{**common, "grpo_steps": 3}))
    assert ran == [0, 1]
    # a record kept before --grpo_prompts existed ran GRPO on the first SFT rows: it stands for sft_rows only
    kept["settings"]["grpo"].pop("grpo_prompts")
    for name in ("grpo_probe_every", "grpo_probe_size"):  # kept before the greedy probe existed: it stands for none
        kept["settings"]["grpo"].pop(name)
    (records / "seed0.json").write_text(json.dumps(kept))
    with pytest.raises(ValueError, match=r"other grpo settings"):
        pipeline.run_compare(CompareConfig(seeds=[0], output_dir=str(tmp_path / "d"), **common))
    old = pipeline.run_compare(CompareConfig(seeds=[0], output_dir=str(tmp_path / "e"), grpo_prompts="sft_rows",
                                             **common))
    assert ran == [0, 1] and old["summary"]["scale"]["accuracy_mean"] == pytest.approx(0.6)


def test_progress_lines_go_to_the_stdout_of_the_moment():
    """demo/compare progress: a second pipeline in one process, with stdout redirected in between, logs to the new
    stdout (the handler used to keep the first one, closed by then: ``--- Logging error ---``)."""
    import contextlib
    import io
    import logging

    from scale_vlm.log_output import pipeline_logging

    name = "scale_vlm.test_progress"
    try:
        first, second = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(first):
            pipeline_logging({name: "> %(message)s"})
            logging.getLogger(name).info("one")
        with contextlib.redirect_stdout(second):
            pipeline_logging({name: "> %(message)s"})  # called again: no second handler
            logging.getLogger(name).info("two")
        assert (first.getvalue(), second.getvalue()) == ("> one\n", "> two\n")
    finally:
        logging.getLogger(name).handlers.clear()


@pytest.mark.parametrize("quick", [False, True])
def test_compare_command_prints_package_warnings_and_the_grpo_budget_one_except_under_quick(
        monkeypatch, tmp_path, capsys, quick):
    """Inside pipelines the package's warnings (here: examples skipped) reach stderr as ``warning: ...``; the GRPO
    trainer's clipped-completions warning does too, except under --quick, whose short budgets are on purpose. The
    non-quick run comes first in one process: --quick's quietening must not outlive its own run."""
    import logging

    from scale_vlm import log_output
    from scale_vlm.cli import compare as compare_cli
    from scale_vlm.compare import pipeline

    def fake_run(cfg, say):
        logging.getLogger("scale_vlm.grpo_trainer").warning("GRPO: 0.90 of this step's completions ...")
        logging.getLogger("scale_vlm.sft_trainer").warning("train data: 3 of 40 examples skipped")
        return {"markdown": ""}

    monkeypatch.setattr(pipeline, "run_compare", fake_run)
    monkeypatch.setattr("scale_vlm.compare.run_compare", fake_run)
    package = logging.getLogger("scale_vlm")
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate,
                    list(logging.getLogger(name).handlers))
             for name in ("scale_vlm", "scale_vlm.grpo_trainer", "scale_vlm.compare", "scale_vlm.stages")}
    try:
        runs = [False, True] if quick else [True, False]  # the run under test last
        for run_quick in runs:
            capsys.readouterr()
            compare_cli._main(["--output_dir", str(tmp_path / str(run_quick))] + (["--quick"] if run_quick else []))
        err = capsys.readouterr().err
    finally:
        for name, (level, propagate, handlers) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers
        log_output._quieted.clear()
    assert package.level == saved["scale_vlm"][0]
    assert "warning: train data: 3 of 40 examples skipped" in err
    assert ("warning: GRPO: 0.90 of this step's completions" in err) is not quick


COMMITTED = sorted(p.parent for p in (Path(__file__).resolve().parent.parent / "results").glob("*/*/results.json"))


@pytest.mark.parametrize("folder", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_a_committed_comparison_table_is_what_its_records_give(folder, tmp_path, monkeypatch):
    """The four-arm and GRPO-search tables that docs/regimes.md and the README quote: their own config (kept in
    results.json) over a copy of their seed records writes the same results.md, and trains nothing."""
    import dataclasses
    import shutil

    from scale_vlm.compare import pipeline

    def no_training(*args, **kwargs):
        raise AssertionError(f"{folder.name}: a seed without its record would train")

    monkeypatch.setattr(pipeline, "run_seed", no_training)
    shutil.copytree(folder, tmp_path / "records")
    kept = json.loads((folder / "results.json").read_text())
    names = {f.name for f in dataclasses.fields(CompareConfig)}
    cfg = CompareConfig(**{**{k: v for k, v in kept["config"].items() if k in names},
                           "output_dir": str(tmp_path / "out"), "records_dir": str(tmp_path / "records")})
    results = pipeline.run_compare(cfg, say=lambda line: None)
    assert results["markdown"] == (folder / "results.md").read_text()
    assert results["paired_accuracy"] == kept["paired_accuracy"] and results["summary"] == kept["summary"]
