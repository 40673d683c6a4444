"""scripts/regime_map.py: the grid, the per-seed paired differences and the aggregation over seeds."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "regime_map.py"


@pytest.fixture(scope="module")
def regime_map():
    spec = importlib.util.spec_from_file_location("regime_map", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_is_typed_by_the_knob_and_crossed(regime_map):
    grid = regime_map.parse_grid(["trace_verbosity=0,2", "trace_entropy=1"])
    assert grid == {"trace_verbosity": [0, 2], "trace_entropy": [1]}
    assert all(isinstance(v, int) for v in grid["trace_verbosity"])
    assert regime_map.cells(grid) == [{"trace_verbosity": 0, "trace_entropy": 1},
                                      {"trace_verbosity": 2, "trace_entropy": 1}]
    assert regime_map.cell_name({"trace_verbosity": 2, "trace_entropy": 1}) == "trace_verbosity=2_trace_entropy=1"
    with pytest.raises(SystemExit, match="benchmark knob"):
        regime_map.parse_grid(["learning_rate=0.1"])


def test_arms_name_real_config_fields(regime_map):
    from scale_vlm.demo import DemoConfig

    for method, overrides in regime_map.ARMS.values():
        assert method in ("vanilla", "scale")
        DemoConfig(**overrides)  # an unknown or invalid field raises
    assert regime_map.ARMS["adaptive"] == ("scale", {"progress_mode": "adaptive"})


def test_final_logged_is_the_mean_of_the_last_logs(regime_map):
    history = [{"loss_think": 3.0}, {"loss": 1.0}, {"loss_think": 1.0}, {"loss_think": 2.0}, {"loss_think": 6.0}]
    assert regime_map.final_logged(history, "loss_think") == pytest.approx(3.0)  # (1 + 2 + 6) / 3
    assert regime_map.final_logged(history, "loss_think", last=1) == 6.0
    assert regime_map.final_logged(history, "w_think") is None


def test_token_ratio_counts_segments(regime_map):
    # think 1, answer 2 (SEGMENT_* values), prompt 0
    rows = {"segment_ids": [[0, 1, 1, 1, 2], [0, 0, 1, 2, 2, 2]]}
    r = regime_map.token_ratio(rows)
    assert r == {"think_tokens": 2.0, "answer_tokens": 2.0, "think_answer_ratio": 1.0}


def _record(acc, consistency, think_loss, ratio=20.0):
    return {"accuracy": acc, "malformed_rate": 0.0, "letter_consistency": consistency, "value_accuracy": acc,
            "mean_think_tokens": 100.0, "final_loss_think": think_loss, "final_loss_answer": 0.1,
            "train_seconds": 10.0, "majority": 0.25, "think_answer_ratio": ratio, "think_tokens": 160.0}


def test_aggregate_pairs_arms_seed_by_seed_and_skips_unfinished_seeds(regime_map):
    cell = {"trace_entropy": 2}
    name = regime_map.cell_name(cell)
    records = {
        (name, 0, "vanilla"): _record(0.50, 0.80, 1.0), (name, 0, "scale"): _record(0.56, 0.90, 1.2),
        (name, 1, "vanilla"): _record(0.60, 0.85, 1.1), (name, 1, "scale"): _record(0.58, 0.95, 1.3),
        (name, 2, "vanilla"): _record(0.40, 0.70, 0.9),  # seed 2's SCALe run has not finished: left out
    }
    [entry] = regime_map.aggregate(records, [cell, {"trace_entropy": 0}], [0, 1, 2], ["vanilla", "scale"])
    assert entry["seeds"] == [0, 1]
    d = entry["minus_vanilla"]["scale"]["accuracy"]
    assert d["values"] == pytest.approx([0.06, -0.02])
    assert d["mean"] == pytest.approx(0.02)
    assert d["std"] == pytest.approx(0.0565685, rel=1e-5)  # sample std of (0.06, -0.02)
    assert entry["minus_vanilla"]["scale"]["letter_consistency"]["mean"] == pytest.approx(0.10)
    assert entry["arms"]["vanilla"]["accuracy"]["mean"] == pytest.approx(0.55)
    assert entry["arms"]["vanilla"]["final_loss_think"]["mean"] == pytest.approx(1.05)
    assert entry["think_answer_ratio"] == 20.0
    table = regime_map.cell_table([entry], ["vanilla", "scale"])
    assert "| trace_entropy=2 | 0,1 | 20.0 | 1.050 ± 0.071 | 0.250 ± 0.000 | 0.550 ± 0.071 | 0.570 ± 0.014 | 0.020 ± 0.057 |" \
        in table


def test_pooled_differences_over_cells_and_per_seed(regime_map):
    """Every paired (cell, seed) of the finished cells, with unequal seed counts per cell: counts ahead / behind /
    tied, the mean over all pairs and each seed's mean over its own cells."""
    a, b = {"trace_entropy": 0}, {"trace_entropy": 2}
    records = {}
    for cell, seed, van, sca in ((a, 0, 0.50, 0.56), (a, 1, 0.60, 0.58), (b, 0, 0.40, 0.50), (b, 1, 0.45, 0.45),
                                 (b, 2, 0.30, 0.42)):
        records[(regime_map.cell_name(cell), seed, "vanilla")] = _record(van, 0.8, 1.0)
        records[(regime_map.cell_name(cell), seed, "scale")] = _record(sca, 0.9, 1.0)
    entries = regime_map.aggregate(records, [a, b], [0, 1, 2], ["vanilla", "scale"])
    summary = regime_map.pooled(entries, "scale")
    assert (summary["pairs"], summary["cells"], summary["ahead"], summary["behind"]) == (5, 2, 3, 1)
    assert summary["accuracy"]["mean"] == pytest.approx((0.06 - 0.02 + 0.10 + 0.0 + 0.12) / 5)
    assert {s: v["cells"] for s, v in summary["per_seed"].items()} == {0: 2, 1: 2, 2: 1}
    assert [v["mean"] for v in summary["per_seed"].values()] == pytest.approx([0.08, -0.01, 0.12])
    table = regime_map.cell_table(entries, ["vanilla", "scale"])
    assert ("over the 5 paired runs of 2 cells: +0.052 ± 0.061 (mean ± sample std); ahead in 3, behind in 1, tied in 1. "
            "Per seed, over its cells: seed 0 +0.080 (2 cells); seed 1 -0.010 (2 cells); seed 2 +0.120 (1 cell)") in table
    assert regime_map.pooled(entries, "adaptive") is None


def test_gain_correlations_pair_each_run_with_its_own_vanilla(regime_map):
    """Per paired run: the accuracy gain against vanilla's consistency and the changes in consistency and trace
    correctness; unequal seed counts per cell, so a mis-zipped pairing shows."""
    a, b = {"trace_entropy": 0}, {"trace_entropy": 2}
    runs = [  # cell, seed, (vanilla acc, consistency, value), (scale acc, consistency, value)
        (a, 0, (0.50, 0.70, 0.55), (0.60, 0.90, 0.56)), (a, 1, (0.55, 0.90, 0.50), (0.54, 0.91, 0.52)),
        (b, 0, (0.40, 0.75, 0.45), (0.47, 0.88, 0.44)), (b, 1, (0.45, 0.95, 0.50), (0.42, 0.93, 0.46)),
        (b, 2, (0.30, 0.80, 0.40), (0.36, 0.85, 0.45))]
    records = {}
    for cell, seed, van, sca in runs:
        for arm, (acc, cons, value) in (("vanilla", van), ("scale", sca)):
            records[(regime_map.cell_name(cell), seed, arm)] = {**_record(acc, cons, 1.0), "value_accuracy": value}
    entries = regime_map.aggregate(records, [a, b], [0, 1, 2], ["vanilla", "scale"])
    gain = [sca[0] - van[0] for _, _, van, sca in runs]
    expected = {"vanilla_consistency": [van[1] for *_, van, _ in runs],
                "consistency_change": [sca[1] - van[1] for *_, van, sca in runs],
                "trace_correctness_change": [sca[2] - van[2] for *_, van, sca in runs]}
    got = regime_map.gain_correlations(entries, "scale")
    for name, xs in expected.items():
        assert got[name] == pytest.approx(statistics.correlation(xs, gain)), name
    assert got["vanilla_consistency"] < -0.9  # these runs gain where vanilla's answers ignore its traces
    line = regime_map.pooled_line("scale", regime_map.pooled(entries, "scale"))
    assert f"correlates {got['vanilla_consistency']:+.2f} with vanilla's own answer-trace consistency" in line
    # too few pairs: no correlation, and no sentence
    few = regime_map.aggregate(records, [a], [0, 1], ["vanilla", "scale"])
    assert regime_map.gain_correlations(few, "scale") == dict.fromkeys(expected)
    assert "correlates" not in regime_map.pooled_line("scale", regime_map.pooled(few, "scale"))


def test_cells_are_listed_one_by_one_with_optional_row_labels(regime_map):
    cell_list, rows = regime_map.parse_cells(["r30:trace_verbosity=0,trace_repeat=3,trace_entropy=0",
                                              "trace_repeat=1,trace_entropy=2"])
    assert cell_list == [{"trace_verbosity": 0, "trace_repeat": 3, "trace_entropy": 0},
                         {"trace_repeat": 1, "trace_entropy": 2}]
    assert rows == {"trace_verbosity=0_trace_repeat=3_trace_entropy=0": "r30"}
    with pytest.raises(SystemExit, match="benchmark knob"):  # two values of one knob in a cell
        regime_map.parse_cells(["trace_repeat=2,3"])
    with pytest.raises(SystemExit, match="twice"):
        regime_map.parse_cells(["a:trace_repeat=2", "b:trace_repeat=2"])


def test_heat_axes_use_row_labels_for_listed_cells_and_knobs_for_a_grid(regime_map):
    cell_list, rows = regime_map.parse_cells(["r22:trace_repeat=2,trace_entropy=0", "r22:trace_repeat=1,trace_entropy=1",
                                              "r30:trace_repeat=3,trace_entropy=0"])
    assert regime_map.heat_axes(cell_list, rows, "trace_entropy") == ("trace_entropy", [0, 1], "row", ["r22", "r30"])
    grid = regime_map.cells(regime_map.parse_grid(["trace_verbosity=0,2", "trace_entropy=1,0"]))
    assert regime_map.heat_axes(grid, {}, "trace_entropy") == ("trace_verbosity", [0, 2], "trace_entropy", [1, 0])
    assert regime_map.heat_axes(regime_map.cells({"trace_entropy": [0, 1]}), {}, "trace_entropy") is None


def test_records_dir_resumes_a_map_without_training(regime_map, tmp_path, capsys):
    cell = {"trace_entropy": 2}
    name = regime_map.cell_name(cell)
    for seed, (v, s) in enumerate([(0.5, 0.56), (0.6, 0.58)]):
        for arm, acc in (("vanilla", v), ("scale", s)):
            path = tmp_path / "rec" / name / f"seed{seed}" / f"{arm}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(__import__("json").dumps(_record(acc, 0.9, 1.0)))
    assert regime_map.main(["--cells", "r:trace_entropy=2", "--seeds", "0", "1", "--records_dir", str(tmp_path / "rec"),
                            "--output_dir", str(tmp_path / "runs")]) == 0
    assert "4 runs, 4 already done, 0 to train" in capsys.readouterr().out
    saved = __import__("json").loads((tmp_path / "rec" / "map.json").read_text())
    [table] = saved["tables"]
    assert table["arms"] == ["vanilla", "scale"]
    [entry] = table["cells"]
    assert entry["row"] == "r"
    assert entry["minus_vanilla"]["scale"]["accuracy"]["values"] == pytest.approx([0.06, -0.02])
    assert (tmp_path / "rec" / "map_scale.png").stat().st_size > 0
    # --report_only: a third seed without records is reported as left to train, and nothing trains
    assert regime_map.main(["--cells", "r:trace_entropy=2", "--seeds", "0", "1", "2", "--records_dir",
                            str(tmp_path / "rec"), "--output_dir", str(tmp_path / "runs"), "--report_only"]) == 0
    assert "6 runs, 4 already done, 2 to train (not now: --report_only)" in capsys.readouterr().out
    [[entry]] = [t["cells"] for t in __import__("json").loads((tmp_path / "rec" / "map.json").read_text())["tables"]]
    assert entry["seeds"] == [0, 1]
    # map.md ends with every finished run, one row each, named by its row label and column value
    report = (tmp_path / "rec" / "map.md").read_text()
    every = report[report.index("## Every run"):]
    assert every.count("| r trace_entropy=2 |") == 4
    assert "| r trace_entropy=2 | 1 | scale | 20.0 | 0.580 | 0.000 | 0.900 | 0.580 | 1.000 | 0.1000 | 0.250 | - |" in every


def test_runs_table_lists_unpaired_runs_in_command_order(regime_map):
    """A run whose pair has not finished still has its row (the cell table leaves that seed out); rows follow the
    cells as listed, then seeds, then arms."""
    a, b = {"trace_entropy": 0}, {"trace_entropy": 2}
    records = {(regime_map.cell_name(b), 0, "vanilla"): {**_record(0.40, 0.7, 1.0), "cpu_seconds": 1234.4},
               (regime_map.cell_name(a), 1, "scale"): _record(0.55, 0.9, 1.1),
               (regime_map.cell_name(a), 1, "vanilla"): _record(0.50, 0.8, 1.0)}
    table = regime_map.runs_table(records, [a, b], [0, 1], ["vanilla", "scale"], {}, "trace_entropy")
    lines = table.splitlines()[2:]
    assert [line.split(" | ")[:3] for line in lines] == [["| trace_entropy=0", "1", "vanilla"],
                                                          ["| trace_entropy=0", "1", "scale"],
                                                          ["| trace_entropy=2", "0", "vanilla"]]
    assert lines[2].endswith("| 0.400 | 0.000 | 0.700 | 0.400 | 1.000 | 0.1000 | 0.250 | 1234 |")
    assert regime_map.runs_table({}, [a], [0], ["vanilla"], {}, "trace_entropy") == ""


def test_run_one_is_the_demo_arm_plus_the_diagnostics(regime_map, tmp_path):
    """One run through the demo's own train-and-evaluate: the record holds the demo arm's metrics, the diagnostics,
    the measured token ratio and the loss curve of every logged step, and its copy is the same file."""
    import json

    from scale_vlm.demo import DemoConfig

    cfg = DemoConfig(num_train=8, num_test=4, max_steps=2, batch_size=4, max_new_tokens=8, eval_batch_size=4,
                     progress=False, parallel_methods=False, trace_verbosity=0, trace_repeat=0, output_dir="unused")
    record = regime_map.run_one(cfg, "scale", tmp_path / "run", tmp_path / "kept" / "scale.json")
    assert (tmp_path / "kept" / "scale.json").read_text() == (tmp_path / "run" / "record.json").read_text()
    assert json.loads((tmp_path / "run" / "record.json").read_text()) == record
    assert record["arm"] == "scale" and record["config"]["seed"] == 0
    assert record["num_examples"] == 4 and 0.0 <= record["accuracy"] <= 1.0
    assert (tmp_path / "run" / "scale" / "predictions.jsonl").read_text().count("\n") == 4
    # a given generation budget is kept (the default, 0, is the demo's rule: tests/test_demo.py)
    assert record["max_new_tokens"] == record["config"]["max_new_tokens"] == 8
    assert record["longest_training_response"] > 8
    assert [p["step"] for p in record["loss_curve"]] == [1, 2]
    assert record["think_answer_ratio"] == pytest.approx(record["think_tokens"] / record["answer_tokens"])
    assert 0.0 <= record["letter_consistency"] <= 1.0 and record["cpu_seconds"] > 0
    import transformers

    assert record["machine"]["transformers"] == transformers.__version__ and record["machine"]["cpu"]


def test_status_line_counts_the_design_and_names_the_runs_without_a_record(regime_map):
    a, b = {"trace_entropy": 0}, {"trace_entropy": 2}
    records = {(regime_map.cell_name(a), 0, "vanilla"): {}, (regime_map.cell_name(a), 0, "scale"): {},
               (regime_map.cell_name(b), 1, "scale"): {}}
    line = regime_map.status_line(records, [a, b], [0, 1], ["vanilla", "scale"], {regime_map.cell_name(b): "r46"},
                                  "trace_entropy")
    assert line == ("Recorded: 3 of the 8 runs of this command (2 cells x 2 seeds x 2 arms); not yet run (arm seed): "
                    "trace_entropy=0 (vanilla 1, scale 1); r46 trace_entropy=2 (vanilla 0, scale 0, vanilla 1).")
    assert regime_map.status_line(records, [a], [0], ["vanilla", "scale"], {}, "trace_entropy") == \
        "Recorded: 2 of the 2 runs of this command (1 cells x 1 seeds x 2 arms)."
    report = regime_map.format_markdown([], "cmd", status=line)
    assert report.splitlines()[2] == line


def test_report_of_a_command_without_the_vanilla_arm(regime_map):
    """``--arms adaptive`` alone (vanilla and cosine recorded by earlier commands) trains, then reports: no paired
    difference to show, "-" in its columns (the report used to raise KeyError after the run had finished)."""
    cell = {"trace_entropy": 0}
    records = {(regime_map.cell_name(cell), 0, "adaptive"): {**_record(0.59, 0.9, 1.0), "think_answer_ratio": 28.5,
                                                             "think_tokens": 100.0, "majority": 0.25}}
    entries = regime_map.aggregate(records, [cell], [0], ["adaptive"])
    report = regime_map.cell_table(entries, ["adaptive"])
    row = next(line for line in report.splitlines() if line.startswith("| trace_entropy=0 |"))
    assert row.endswith("| 0.590 ± 0.000 | - | - |")


def test_each_scale_arm_has_a_table_paired_with_vanilla_and_the_earlier_arms(regime_map):
    """Three arms with adaptive on fewer seeds: the cosine table keeps every vanilla/cosine pair; the adaptive table
    holds only the runs with all three arms, and the paired adaptive - cosine difference over them."""
    a, b = {"trace_entropy": 0}, {"trace_entropy": 2}
    runs = [(a, 0, (0.50, 0.56, 0.60)), (a, 1, (0.60, 0.58, None)), (a, 2, (0.40, 0.45, 0.41)),
            (b, 0, (0.30, 0.35, None)), (b, 1, (0.45, 0.45, 0.55))]
    records = {}
    for cell, seed, accs in runs:
        for arm, acc in zip(("vanilla", "scale", "adaptive"), accs):
            if acc is not None:
                records[(regime_map.cell_name(cell), seed, arm)] = _record(acc, 0.9, 1.0)
    cosine, adaptive = regime_map.report_tables(records, [a, b], [0, 1, 2], ["vanilla", "scale", "adaptive"])
    assert cosine["arms"] == ["vanilla", "scale"] and adaptive["arms"] == ["vanilla", "scale", "adaptive"]
    assert [e["seeds"] for e in cosine["cells"]] == [[0, 1, 2], [0, 1]]
    assert [e["seeds"] for e in adaptive["cells"]] == [[0, 2], [1]]
    assert cosine["pooled"]["scale"]["pairs"] == 5 and adaptive["pooled"]["adaptive"]["pairs"] == 3
    assert adaptive["pooled"]["scale"]["accuracy"]["mean"] == pytest.approx((0.06 + 0.05 + 0.0) / 3)
    assert adaptive["pooled"]["adaptive"]["accuracy"]["mean"] == pytest.approx((0.10 + 0.01 + 0.10) / 3)
    diffs = [0.04, -0.04, 0.10]  # adaptive - cosine: (a, 0), (a, 2), (b, 1)
    line = regime_map.paired_line(adaptive["cells"], "adaptive", "scale")
    assert line == (f"Paired, adaptive - scale accuracy over the same 3 runs: {statistics.fmean(diffs):+.3f} ± "
                    f"{statistics.stdev(diffs):.3f} (mean ± sample std); ahead in 2, behind in 1, tied in 0.")
    report = regime_map.format_markdown([cosine, adaptive], "cmd")
    assert "## scale against vanilla\n" in report
    assert "## adaptive against vanilla and scale, on the runs that have all 3\n" in report
    assert report.count(line) == 1 and report.count("Pooled, scale - vanilla") == 2
    # no vanilla record at all: the arm's table stands alone
    alone = {k: v for k, v in records.items() if k[2] == "adaptive"}
    [table] = regime_map.report_tables(alone, [a, b], [0, 1, 2], ["vanilla", "adaptive"])
    assert table["arms"] == ["adaptive"] and table["pooled"] == {"adaptive": None}


def test_an_arm_only_command_pairs_with_the_vanilla_records_on_disk(regime_map, tmp_path, capsys):
    """``--arms adaptive`` after vanilla was recorded by an earlier command: its report pairs the two (it used to show
    "-"), and the vanilla run is neither counted in its design nor trained."""
    import json

    name = regime_map.cell_name({"trace_entropy": 2})
    for arm, acc in (("vanilla", 0.40), ("adaptive", 0.47)):
        path = tmp_path / "rec" / name / "seed0" / f"{arm}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_record(acc, 0.9, 1.0)))
    assert regime_map.main(["--cells", "r:trace_entropy=2", "--seeds", "0", "--arms", "adaptive", "--records_dir",
                            str(tmp_path / "rec"), "--output_dir", str(tmp_path / "runs")]) == 0
    assert "1 runs, 1 already done, 0 to train" in capsys.readouterr().out
    [table] = json.loads((tmp_path / "rec" / "map.json").read_text())["tables"]
    assert table["arms"] == ["vanilla", "adaptive"]
    assert table["cells"][0]["minus_vanilla"]["adaptive"]["accuracy"]["values"] == pytest.approx([0.07])
    report = (tmp_path / "rec" / "map.md").read_text()
    assert "Recorded: 1 of the 1 runs of this command" in report
    assert (tmp_path / "rec" / "map_adaptive.png").stat().st_size > 0


RESULTS = SCRIPT.parent.parent / "results"


@pytest.mark.parametrize("folder", ["regime-map", "regime-pilot"])
def test_the_committed_report_is_what_its_own_command_makes_of_the_committed_records(regime_map, folder, tmp_path,
                                                                                     monkeypatch, capsys):
    """Every figure of a committed map.md (docs/regimes.md and the README quote them) comes from its records: the
    command written at its top, run again on a copy of the folder with nothing to train, writes the same report."""
    import json
    import shlex
    import shutil

    committed = RESULTS / folder
    report = (committed / "map.md").read_text()
    [command] = [line for line in report.splitlines() if line.startswith("Command: `")]
    argv = shlex.split(command[len("Command: `python scripts/regime_map.py "):-1])
    records_dir = Path(argv[argv.index("--records_dir") + 1])
    assert records_dir == Path("results") / folder
    shutil.copytree(committed, tmp_path / records_dir)
    for made in ("map.md", "map.json"):
        (tmp_path / records_dir / made).unlink()
    monkeypatch.chdir(tmp_path)
    # never train in a test: a run without its record is reported as left to train, not trained
    assert regime_map.main(argv if "--report_only" in argv else [*argv, "--report_only"]) == 0
    capsys.readouterr()

    def without_command(text):
        return [line for line in text.splitlines() if not line.startswith("Command: `")]

    assert without_command((tmp_path / records_dir / "map.md").read_text()) == without_command(report)
    assert json.loads((tmp_path / records_dir / "map.json").read_text())["tables"] == \
        json.loads((committed / "map.json").read_text())["tables"]


def test_the_readme_regime_table_and_status_are_the_committed_map(regime_map):
    """The README's "Where SCALe helps" table, its run count and its pooled figure (and docs/regimes.md's run
    count), read against the committed map.json and records: a record that lands without the docs following fails."""
    import json
    import re

    readme = (SCRIPT.parent.parent / "README.md").read_text()
    tables = json.loads((RESULTS / "regime-map" / "map.json").read_text())["tables"]
    [cosine] = [t for t in tables if t["arms"] == ["vanilla", "scale"]]
    by_place = {(e["row"], e["cell"]["trace_entropy"]): e for e in cosine["cells"]}
    rows = {"about 22": "r22", "about 30": "r30", "43-47": "r46"}  # the README's row labels: the map's rows
    checked = 0
    for line in readme.splitlines():
        label = line.split("|")[1].strip() if line.startswith("|") else ""
        if label not in rows:
            continue
        for entropy, text in enumerate(line.split("|")[2:5]):
            entry = by_place[(rows[label], entropy)]
            diff = entry["minus_vanilla"]["scale"]["accuracy"]
            shown = re.match(r"\s*([+-]\d+\.\d) ± (\d+\.\d)", text)
            assert shown, f"README row {label!r}, entropy {entropy}: no '+x.y ± z.w' in {text!r}"
            assert (float(shown[1]), float(shown[2])) == (round(100 * diff["mean"], 1), round(100 * diff["std"], 1)), \
                f"README row {label!r}, entropy {entropy}: {text.strip()!r} against the map's {diff}"
            assert ("so far" in text) == (len(entry["seeds"]) < 3), f"README row {label!r}, entropy {entropy}: seeds"
            checked += 1
    assert checked == 9
    done = len(list((RESULTS / "regime-map").glob("*/seed*/*.json")))
    pooled = cosine["pooled"]["scale"]
    stated = re.search(r"(\d+) of the map's 81 runs are done(?: \([^)]*\))?; pooled over the (\d+) paired runs of its "
                       r"(\d+) cells( so far)?, SCALe-SFT minus vanilla is\s+([+-]\d+\.\d) ± (\d+\.\d) points", readme)
    assert stated, "README: the map's status sentence is missing"
    assert (stated[4] is not None) == (done < 81), "README: 'so far' while runs remain, and only then"
    regimes = (SCRIPT.parent.parent / "docs" / "regimes.md").read_text()
    assert int(re.search(r"\*\*Status: (\d+) of the 81 runs are done\*\*", regimes)[1]) == done
    assert [int(x) for x in stated.groups()[:3]] == [done, pooled["pairs"], pooled["cells"]]
    assert (float(stated[5]), float(stated[6])) == (round(100 * pooled["accuracy"]["mean"], 1),
                                                    round(100 * pooled["accuracy"]["std"], 1))


def test_the_map_is_pooled_by_row_and_by_column(regime_map):
    """Three cells on two rows and two columns, unequal seeds per cell: each row's and each column's pooled
    difference is over its own pairs only; a group of one pair shows no spread."""
    cells = [{"trace_repeat": 2, "trace_entropy": 0}, {"trace_repeat": 1, "trace_entropy": 2},
             {"trace_repeat": 5, "trace_entropy": 0}]
    labels = ["r22", "r22", "r46"]
    diffs = [[0.10, -0.02], [0.04], [0.20, 0.16, 0.12]]
    records = {}
    for cell, cell_diffs in zip(cells, diffs):
        for seed, diff in enumerate(cell_diffs):
            records[(regime_map.cell_name(cell), seed, "vanilla")] = _record(0.40, 0.8, 1.0)
            records[(regime_map.cell_name(cell), seed, "scale")] = _record(0.40 + diff, 0.9, 1.0)
    entries = regime_map.aggregate(records, cells, [0, 1, 2], ["vanilla", "scale"])
    for entry, label in zip(entries, labels):
        entry["row"] = label
    by = regime_map.axis_pooled(entries, "scale", "trace_entropy")
    assert list(by) == ["row r22", "row r46", "trace_entropy=0", "trace_entropy=2"]
    assert by["row r22"]["accuracy"]["values"] == pytest.approx([0.10, -0.02, 0.04])
    assert by["trace_entropy=0"]["accuracy"]["mean"] == pytest.approx((0.10 - 0.02 + 0.20 + 0.16 + 0.12) / 5)
    assert (by["trace_entropy=0"]["ahead"], by["trace_entropy=0"]["behind"]) == (4, 1)
    line = regime_map.axis_line("scale", by)
    assert "row r22 +0.040 ± 0.060 (3 pairs, ahead 2, behind 1)" in line
    assert "row r46 +0.160 ± 0.040 (3 pairs, ahead 3, behind 0)" in line
    assert "trace_entropy=2 +0.040 (1 pair, ahead 1, behind 0)" in line
    # one row and one column: the pooled line already says it all
    assert regime_map.axis_pooled(entries[:1], "scale", "trace_entropy") == {}
