"""``scale-vlm demo``: helpers (fast) and the whole quick run end to end (slow)."""

from __future__ import annotations

import json

import pytest

from scale_vlm.demo import DemoConfig, _check_output_dir, format_table, majority_baseline, plot_curves


def test_majority_baseline():
    b = majority_baseline(["A", "B", "A", "3"], ["A", "B", "C", "A"])
    assert b == {"answer": "A", "accuracy": 0.5}


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="results.json"):
        _check_output_dir(DemoConfig(output_dir=str(tmp_path)))
    _check_output_dir(DemoConfig(output_dir=str(tmp_path), overwrite_output_dir=True))
    assert not (tmp_path / "results.json").exists()
    (aside,) = tmp_path.glob("previous-run-*")  # moved, not deleted (tests/test_output_dir_policy.py)
    assert (aside / "results.json").read_text() == "{}"


def test_generation_budget_follows_the_longest_training_response():
    """--max_new_tokens 0 (the default) gives 1.5x the longest labelled response of the training rows, at least
    MIN_NEW_TOKENS; a given budget is kept. Unequal lengths: the longest, not the first or the mean, sets it."""
    from scale_vlm.demo import MIN_NEW_TOKENS, generation_budget

    rows = {"labels": [[-100] * 30 + [7] * 150, [-100] * 5 + [7] * 401 + [-100], [-100] * 2 + [7] * 3]}
    assert DemoConfig().max_new_tokens == 0
    assert generation_budget(DemoConfig(), rows) == 601  # int(1.5 * 401)
    assert generation_budget(DemoConfig(), {"labels": [[-100, 7, 7]]}) == MIN_NEW_TOKENS == 200
    assert generation_budget(DemoConfig(max_new_tokens=50), rows) == 50
    with pytest.raises(ValueError, match="max_new_tokens"):
        DemoConfig(max_new_tokens=-1)


def test_run_demo_evaluates_with_the_budget_of_its_own_training_rows(tmp_path, monkeypatch):
    """run_demo resolves --max_new_tokens 0 on the rows it trains on, before either method runs (no trace of the
    default regime fits the old fixed 200 tokens)."""
    from scale_vlm import demo

    class Stop(Exception):
        pass

    seen = {}

    def capture(method, cfg, out, rows, *rest, **kw):
        seen["budget"], seen["rows"] = cfg.max_new_tokens, rows
        raise Stop

    monkeypatch.setattr(demo, "train_and_evaluate", capture)
    with pytest.raises(Stop):
        demo.run_demo(DemoConfig(output_dir=str(tmp_path / "d"), num_train=40, num_test=4, parallel_methods=False,
                                 progress=False), say=print)
    longest = max(sum(label != -100 for label in labels) for labels in seen["rows"]["labels"])
    assert seen["budget"] == int(1.5 * longest) > demo.MIN_NEW_TOKENS


def test_demo_regime_is_a_mapped_cell_that_clears_the_bar():
    """The demo's default regime is chosen by the rule of docs/regimes.md: its cell has committed map records for 3
    seeds in which both methods are at least 10 points above the majority answer with under 5% malformed outputs.
    The benchmark's own defaults stay the templated regime (the compare stage and the tests build on them)."""
    from pathlib import Path

    from scale_vlm.bench.dataset import BenchConfig
    from scale_vlm.demo import DEMO_REGIME

    cfg = DemoConfig()
    assert {k: getattr(cfg, k) for k in DEMO_REGIME} == DEMO_REGIME == {"trace_verbosity": 0, "trace_repeat": 3,
                                                                        "trace_entropy": 2}
    assert (BenchConfig.trace_verbosity, BenchConfig.trace_repeat, BenchConfig.trace_entropy) == (1, 0, 0)
    cell = Path(__file__).parents[1] / "results" / "regime-map" / "_".join(f"{k}={v}" for k, v in DEMO_REGIME.items())
    for seed in (0, 1, 2):
        for method in ("vanilla", "scale"):
            record = json.loads((cell / f"seed{seed}" / f"{method}.json").read_text())
            assert {k: record["config"][k] for k in DEMO_REGIME} == DEMO_REGIME
            assert (record["config"]["max_steps"], record["config"]["batch_size"]) == (cfg.max_steps, cfg.batch_size)
            assert record["accuracy"] >= record["majority"] + 0.10 and record["malformed_rate"] < 0.05, (seed, method)


def test_quick_is_small():
    cfg = DemoConfig(quick=True)
    assert cfg.max_steps * cfg.batch_size <= 64 and cfg.num_test <= 20


def test_quick_sets_only_defaults_and_reports_what_it_set(tmp_path, monkeypatch):
    """An option the user gave survives --quick, one left at its default is replaced; run_demo says exactly what was
    set (and says nothing without --quick)."""
    from scale_vlm import demo

    cfg = DemoConfig(quick=True, output_dir=str(tmp_path / "q"), max_steps=10, max_new_tokens=50)
    assert (cfg.max_steps, cfg.max_new_tokens) == (10, 50)
    assert (cfg.num_train, cfg.num_test, cfg.batch_size) == (64, 20, 8)
    assert cfg.quick_settings == {"num_train": 64, "num_test": 20, "batch_size": 8}
    assert DemoConfig(quick=True).quick_settings == demo.QUICK
    assert DemoConfig().quick_settings == {} and DemoConfig().num_train == 2000

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop

    monkeypatch.setattr(demo, "base_model_dir", stop)  # the step after the report: nothing is trained
    said = []
    with pytest.raises(Stop):
        demo.run_demo(cfg, say=said.append)
    assert said == ["--quick set --num_train 64, --num_test 20, --batch_size 8 (options you give yourself are kept)"]
    said.clear()
    with pytest.raises(Stop):
        demo.run_demo(DemoConfig(output_dir=str(tmp_path / "full")), say=said.append)
    assert said == []


def test_quick_keeps_an_option_given_at_its_default_value(tmp_path):
    """`demo --quick --num_train 2000` keeps 2000, the default, because it was given (on the command line or in the
    --config file); in Python a value equal to the default cannot be told from one left alone."""
    from trl import TrlParser

    from scale_vlm import demo
    from scale_vlm.cli.common import parse

    def parsed(*argv):
        (cfg,) = parse(TrlParser((DemoConfig,)), ["--quick", *argv])
        return cfg

    cfg = parsed("--num_train", "2000", "--batch_size=16")
    assert (cfg.num_train, cfg.batch_size, cfg.num_test) == (2000, 16, 20)
    assert cfg.quick_settings == {k: v for k, v in demo.QUICK.items() if k not in ("num_train", "batch_size")}
    # every spelling argparse accepts counts as given: an abbreviation, the dashed alias
    cfg = parsed("--num_tr", "2000", "--batch-size", "16")
    assert (cfg.num_train, cfg.batch_size, cfg.num_test) == (2000, 16, 20)
    assert "num_train" not in cfg.quick_settings and "batch_size" not in cfg.quick_settings
    config = tmp_path / "demo.yaml"
    config.write_text("num_test: 200\n")
    cfg = parsed("--config", str(config))
    assert (cfg.num_test, cfg.num_train) == (200, 64) and "num_test" not in cfg.quick_settings
    assert parsed().quick_settings == demo.QUICK  # nothing given: --quick sets all of it
    assert parsed().output_dir == demo.QUICK_OUTPUT_DIR and parsed("--output_dir", "runs/demo").output_dir == "runs/demo"
    assert DemoConfig(quick=True, num_train=2000).num_train == 64  # the Python API cannot tell (documented)


def test_table_and_plot(tmp_path):
    hist = [{"step": s, "loss_think": 2.0 / s, "loss_answer": 1.0 / s, "w_think": 0.5, "w_answer": 0.5} for s in (1, 2, 3)]
    plot_curves({"vanilla": hist, "scale": hist}, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    row = {"accuracy": 0.5, "malformed_rate": 0.1, "mean_think_tokens": 40.0, "train_seconds": 12.0}
    text = format_table({"methods": {"vanilla": row, "scale": row}, "majority_baseline": {"answer": "A", "accuracy": 0.25}})
    assert "| vanilla | 0.500 | 0.100 | 40.0 | 12 |" in text and "majority" in text


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    from scale_vlm.cli.demo import main

    out = tmp_path / "demo"
    assert main(["--quick", "--output_dir", str(out), "--progress", "false"]) == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("vanilla", "scale"):
        r = results["methods"][method]
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["malformed_rate"] <= 1 and r["train_seconds"] > 0
        state = json.loads((out / method / "trainer_state.json").read_text())
        assert any("loss_answer" in h for h in state["log_history"])
    assert (out / "results.md").is_file() and (out / "training_curves.png").stat().st_size > 1000
    assert main(["--quick", "--output_dir", str(out)]) == 2  # refuses to overwrite (a user error: exit 2)


def test_parallel_methods_match_sequential(tmp_path, monkeypatch, capsys):
    """The two methods trained in two processes see the same data, seeds and steps: identical logged losses. The
    sequential run is the default (parallel) config on a machine that offers one core."""
    from scale_vlm import demo
    from scale_vlm.demo import DemoConfig, run_demo

    runs = {}
    for parallel in (False, True):
        cfg = DemoConfig(quick=True, output_dir=str(tmp_path / f"p{int(parallel)}"), progress=False, max_new_tokens=8)
        assert cfg.parallel_methods  # the default
        with monkeypatch.context() as m:
            m.setattr(demo, "available_cpus", lambda cpus=2 if parallel else 1: cpus)
            runs[parallel] = run_demo(cfg, say=print)
        said = capsys.readouterr().out
        assert ("one CPU core available" in said) == (not parallel)
    written = json.loads((tmp_path / "p1" / "results.json").read_text())
    # what --quick set is in the results: all of QUICK but the generation budget given above
    assert written["quick_settings"] == {k: v for k, v in demo.QUICK.items() if k != "max_new_tokens"}
    for method in ("vanilla", "scale"):
        seq, par = runs[False]["methods"][method], runs[True]["methods"][method]
        assert seq["final_loss_answer"] is not None
        assert par["final_loss_answer"] == pytest.approx(seq["final_loss_answer"], rel=1e-6)
        assert par["final_loss_think"] == pytest.approx(seq["final_loss_think"], rel=1e-6)
        assert par["accuracy"] == seq["accuracy"] and par["num_examples"] == seq["num_examples"] == 20
        state = json.loads((tmp_path / "p1" / method / "trainer_state.json").read_text())
        assert any("loss_answer" in h for h in state["log_history"])
    assert runs[False]["methods"]["vanilla"]["final_loss_answer"] != runs[False]["methods"]["scale"]["final_loss_answer"]


def test_a_killed_demo_resumes_where_it_stopped(tmp_path, monkeypatch):
    """The demo killed in SCALe's training, after its step-4 checkpoint and after vanilla finished: a plain rerun is
    refused, --resume true takes vanilla's finished arm as it is and continues SCALe from its checkpoint, to the
    losses, accuracy and token counts of a run never interrupted; a finished arm of other settings is refused."""
    from transformers import TrainerCallback

    from scale_vlm import demo, drivers
    from scale_vlm.demo import DemoConfig, run_demo

    def config(name, **kw):
        return DemoConfig(quick=True, output_dir=str(tmp_path / name), progress=False, max_new_tokens=8,
                          parallel_methods=False, save_steps=2, **kw)

    full = run_demo(config("full"), say=print)

    class Interrupt(TrainerCallback):  # Ctrl-C at the end of SCALe's step 5
        def on_step_end(self, args, state, control, **kwargs):
            if args.method == "scale" and state.global_step == 5:
                raise KeyboardInterrupt

    build = drivers.build_sft_trainer
    with monkeypatch.context() as patch:
        patch.setattr(drivers, "build_sft_trainer",
                      lambda *a, **kw: build(*a, **{**kw, "callbacks": [*(kw.get("callbacks") or []), Interrupt()]}))
        with pytest.raises(KeyboardInterrupt):
            run_demo(config("cut"), say=print)
    cut = tmp_path / "cut"
    assert (cut / "vanilla" / demo.METHOD_RECORD).is_file() and not list((cut / "vanilla").glob("checkpoint-*"))
    assert sorted(p.name for p in (cut / "scale").glob("checkpoint-*")) == ["checkpoint-4"]
    with pytest.raises(FileExistsError, match="Resume it with --resume true"):
        run_demo(config("cut"), say=print)
    with pytest.raises(ValueError, match=r"holds the vanilla arm of a run with other --learning_rate \(0.002 there"):
        run_demo(config("cut", resume=True, learning_rate=1e-3), say=print)

    # as if SCALe's first 4 steps had taken 1000 s: a run that resumed reports them, one that restarted does not
    progress = cut / "scale" / "checkpoint-4" / drivers.PROGRESS_FILE
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "seconds": 1000.0}))

    trained = []
    one = demo.train_one
    monkeypatch.setattr(demo, "train_one", lambda method, *a, **kw: trained.append(method) or one(method, *a, **kw))
    resumed = run_demo(config("cut", resume=True), say=print)
    assert trained == ["scale"]  # vanilla was taken as it finished
    assert resumed["methods"]["scale"]["train_seconds"] > 1000 > full["methods"]["scale"]["train_seconds"]
    assert resumed["resumed"] and not full["resumed"]
    assert "Wall time of this resumed run" in (cut / "results.md").read_text()
    for method in ("vanilla", "scale"):
        got, want = resumed["methods"][method], full["methods"][method]
        assert got["accuracy"] == want["accuracy"] and got["num_examples"] == want["num_examples"] == 20
        assert got["final_loss_answer"] == pytest.approx(want["final_loss_answer"], rel=1e-5)
        assert got["final_loss_think"] == pytest.approx(want["final_loss_think"], rel=1e-5)
        assert not list((cut / method).glob("checkpoint-*"))
    losses = {name: [(h["step"], h["loss"]) for h in json.loads((tmp_path / name / "scale" / "trainer_state.json")
                                                                 .read_text())["log_history"] if "loss" in h]
              for name in ("full", "cut")}
    assert [step for step, _ in losses["cut"]] == [step for step, _ in losses["full"]] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in losses["cut"]] == pytest.approx([loss for _, loss in losses["full"]], rel=1e-5)
