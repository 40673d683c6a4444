"""Where SCALe helps: SFT arms over a grid of benchmark settings, several seeds per cell (docs/regimes.md).

    python scripts/regime_map.py --grid trace_verbosity=0,2 trace_entropy=0,2 --seeds 0 1 2 \\
        --arms vanilla scale --output_dir runs/regime-map --jobs 2 [any demo option, e.g. --max_steps 600]
    python scripts/regime_map.py --cells r22:trace_repeat=2,trace_entropy=0 r22:trace_repeat=1,trace_entropy=1 ... \\
        --records_dir results/regime-map --output_dir runs/regime-map --jobs 2

``--grid`` crosses knob values; ``--cells`` lists cells one by one (``[ROW:]knob=v,knob=v``), for designs that are not
a product, such as entropy levels at matched think/answer ratios (the optional ``ROW`` label names the heat map's row).

Every run (cell x seed x arm) trains a fresh copy of the shipped tiny base with the demo's recipe (``DemoConfig``
defaults unless given) and evaluates it greedily on the cell's held-out questions; it writes ``record.json`` in its
own folder, and, with ``--records_dir``, a copy at ``RECORDS_DIR/CELL/seedS/ARM.json`` (small: no checkpoints) that
can be committed; an interrupted map resumes from either (a finished run is never trained again). Each record holds
the code's commit, the machine (CPU model and library releases: float sums differ between CPU kinds), the run's
configuration and its CPU seconds (training and evaluation, this process's threads: comparable when other jobs share
the cores, where wall time is not). Arms:
``vanilla`` (token-mean SFT), ``scale`` (the paper's cosine schedule over steps) and ``adaptive`` (SCALe whose
schedule progress follows the measured think loss, ``progress_mode=adaptive``). Per cell the map reports, over
seeds (mean ± sample std), each arm's accuracy, malformed rate and answer-trace consistency, each SCALe arm minus
vanilla per seed, the measured think/answer token ratio of the training data and the think loss at the end of the
vanilla run (the plateau it reached at this budget: an upper bound on the irreducible think loss).
With several SCALe arms, each has its own table: the arm with vanilla and the SCALe arms listed before it, over the
seeds where all of them have a record (``--arms vanilla scale adaptive``: cosine against vanilla on every finished
pair, then adaptive against vanilla and cosine on the same runs, with their paired difference). A command without
the vanilla arm (``--arms adaptive``) pairs its runs with the vanilla records already on disk.
Writes ``map.json``, ``map.md`` and ``map_<arm>.png`` (that arm minus vanilla accuracy per cell) to the output folder,
and to the records folder when one is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

# arm name -> (method, DemoConfig overrides); "adaptive" uses the loss-driven schedule progress
ARMS = {
    "vanilla": ("vanilla", {}),
    "scale": ("scale", {}),
    "adaptive": ("scale", {"progress_mode": "adaptive"}),
}
METRICS = ("accuracy", "malformed_rate", "letter_consistency", "value_accuracy", "mean_think_tokens",
           "final_loss_think", "final_loss_answer", "train_seconds")
# accuracy differences closer to 0 than this are ties (accuracies are multiples of 1/num_test; float noise is not)
TIE = 1e-9


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["trace_verbosity=0,2", "trace_entropy=0,1"]`` -> ``{"trace_verbosity": [0, 2], ...}`` typed by the
    benchmark knob's default."""
    from scale_vlm.knobs import BenchKnobs

    knobs = {f.name: f.default for f in fields(BenchKnobs)}
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in knobs or not values:
            raise SystemExit(f"--grid {item!r}: expected KNOB=v1,v2 with a benchmark knob ({', '.join(knobs)})")
        grid[name] = [type(knobs[name])(v) for v in values.split(",")]
    return grid


def cells(grid: dict[str, list]) -> list[dict]:
    out = [{}]
    for name, values in grid.items():
        out = [{**c, name: v} for c in out for v in values]
    return out


def parse_cells(items: list[str]) -> tuple[list[dict], dict[str, str]]:
    """``["r22:trace_repeat=2,trace_entropy=0", "trace_repeat=1"]`` -> the cells, typed by the benchmark knobs'
    defaults, and each labelled cell's row label by cell name."""
    cell_list, rows = [], {}
    for item in items:
        label, sep, spec = item.partition(":")
        if "=" in label:  # no label: the colon belongs to a value
            label, sep, spec = "", "", item
        # one value per knob: "trace_repeat=2,3" splits into "trace_repeat=2" and "3", which parse_grid refuses
        cell = {k: v[0] for k, v in parse_grid(spec.split(",")).items()}
        if cell in cell_list:
            raise SystemExit(f"--cells {item!r}: the same cell twice")
        cell_list.append(cell)
        if sep:
            rows[cell_name(cell)] = label
    return cell_list, rows


def cell_name(cell: dict) -> str:
    return "_".join(f"{k}={v}" for k, v in cell.items()) or "default"


def final_logged(history: list[dict], key: str, last: int = 3) -> float | None:
    """Mean of the last ``last`` logged values of ``key`` (one log line is a noisy estimate of a plateau)."""
    values = [h[key] for h in history if key in h][-last:]
    return sum(values) / len(values) if values else None


def token_ratio(rows) -> dict:
    """Mean think and answer tokens (labels) of rendered training rows and their ratio."""
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_THINK

    think = [sum(s == SEGMENT_THINK for s in r) for r in rows["segment_ids"]]
    answer = [sum(s == SEGMENT_ANSWER for s in r) for r in rows["segment_ids"]]
    mt, ma = sum(think) / len(think), sum(answer) / len(answer)
    return {"think_tokens": mt, "answer_tokens": ma, "think_answer_ratio": mt / ma}


def run_one(cfg, arm: str, folder: Path, record_path: Path | None = None) -> dict:
    """One arm of one cell and seed: train, evaluate, diagnose; writes and returns ``record.json`` (and its copy at
    ``record_path``)."""
    from scale_vlm.bench.diagnostics import diagnose
    from scale_vlm.demo import demo_data, generation_budget, longest_response, majority_baseline, train_and_evaluate
    from scale_vlm.stages import git_commit, machine
    from scale_vlm.tiny.shipped import SHIPPED_BASE

    method, overrides = ARMS[arm]
    cfg = replace(cfg, **overrides, progress=False)
    data = demo_data(cfg, SHIPPED_BASE)
    # the demo's generation budget: room for 1.5x the cell's longest training response unless --max_new_tokens says
    longest = longest_response(data.rows)
    cfg = replace(cfg, max_new_tokens=generation_budget(cfg, data.rows))
    t0, cpu0 = time.time(), time.process_time()
    # the demo's arm: the model and its predictions in folder / method, the record next to them
    metrics, hist = train_and_evaluate(method, cfg, folder, data.rows, SHIPPED_BASE, data.examples)
    preds = [json.loads(line) for line in (folder / method / "predictions.jsonl").read_text().splitlines() if line]
    diag = diagnose(preds, data.test, paraphrased=getattr(cfg, "trace_entropy", 0) > 0)
    record = {
        **{k: v for k, v in metrics.items() if k not in ("train_seconds", "eval_seconds", "by_category")},
        "letter_consistency": diag["letter_consistent_with_trace"], "value_accuracy": diag["value_correct"],
        "final_loss_think": final_logged(hist, "loss_think"), "final_loss_answer": final_logged(hist, "loss_answer"),
        "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.time() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1), "commit": git_commit(), "machine": machine(), "arm": arm,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("output_dir", "progress")},
        "max_new_tokens": cfg.max_new_tokens, "longest_training_response": longest,
        "majority": majority_baseline(data.train["answer"], data.test["answer"])["accuracy"], **token_ratio(data.rows),
        "loss_curve": [{k: h[k] for k in ("step", "loss_think", "loss_answer", "w_think", "schedule_progress")
                        if k in h} for h in hist if "loss_think" in h],
    }
    text = json.dumps(record, indent=1) + "\n"
    (folder / "record.json").write_text(text)
    if record_path is not None:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(text)
    return record


def aggregate(records: dict[tuple[str, int, str], dict], cell_list: list[dict], seeds: list[int],
              arms: list[str]) -> list[dict]:
    """Per cell: each arm's metrics over seeds and each SCALe arm minus vanilla, seed by seed (paired: same data,
    same order, same initialisation)."""
    from scale_vlm.report import seed_stats

    out = []
    for cell in cell_list:
        name = cell_name(cell)
        done = [s for s in seeds if all((name, s, a) in records for a in arms)]
        if not done:
            continue
        entry = {"cell": cell, "seeds": done, "arms": {}, "minus_vanilla": {}}
        for arm in arms:
            entry["arms"][arm] = {m: seed_stats(records[(name, s, arm)][m] for s in done) for m in METRICS
                                  if all(records[(name, s, arm)].get(m) is not None for s in done)}
        first = records[(name, done[0], arms[0])]
        entry["think_answer_ratio"] = first["think_answer_ratio"]
        entry["think_tokens"] = first["think_tokens"]
        entry["majority"] = seed_stats(records[(name, s, arms[0])]["majority"] for s in done)
        if "vanilla" in arms:
            for arm in arms:
                if arm == "vanilla":
                    continue
                entry["minus_vanilla"][arm] = {
                    m: seed_stats(records[(name, s, arm)][m] - records[(name, s, "vanilla")][m] for s in done)
                    for m in ("accuracy", "malformed_rate", "letter_consistency", "value_accuracy")}
        out.append(entry)
    return out


def pooled(entries: list[dict], arm: str) -> dict | None:
    """``arm`` minus vanilla accuracy over every paired (cell, seed) of ``entries``, and per seed averaged over its
    cells; None when no cell has the arm. The cells are different regimes and one seed's runs share their test
    questions across cells, so the pairs are not independent: the per-seed means are the conservative reading."""
    from scale_vlm.report import seed_stats

    pairs = [(seed, diff) for e in entries if arm in e["minus_vanilla"]
             for seed, diff in zip(e["seeds"], e["minus_vanilla"][arm]["accuracy"]["values"])]
    if not pairs:
        return None
    by_seed: dict[int, list[float]] = {}
    for seed, diff in pairs:
        by_seed.setdefault(seed, []).append(diff)
    return {"pairs": len(pairs), "cells": sum(arm in e["minus_vanilla"] for e in entries),
            "accuracy": seed_stats(diff for _, diff in pairs),
            "ahead": sum(diff > TIE for _, diff in pairs), "behind": sum(diff < -TIE for _, diff in pairs),
            "per_seed": {seed: {"mean": statistics.fmean(diffs), "cells": len(diffs)}
                         for seed, diffs in sorted(by_seed.items())},
            "correlations": gain_correlations(entries, arm)}


def gain_correlations(entries: list[dict], arm: str) -> dict[str, float | None]:
    """Pearson correlation, over the paired runs, of ``arm`` minus vanilla accuracy with what might explain it:
    vanilla's own answer-trace consistency, and the arm's change in consistency and in trace correctness (None
    below 3 pairs or where one side does not vary). Accuracy moves with the last two partly by construction (a
    right answer is mostly a right trace that the answer follows): they say which of the two the gain came through."""
    paired = [e for e in entries if arm in e["minus_vanilla"] and "letter_consistency" in e["arms"].get("vanilla", {})]
    gain = [d for e in paired for d in e["minus_vanilla"][arm]["accuracy"]["values"]]
    against = {
        "vanilla_consistency": [v for e in paired for v in e["arms"]["vanilla"]["letter_consistency"]["values"]],
        "consistency_change": [d for e in paired for d in e["minus_vanilla"][arm]["letter_consistency"]["values"]],
        "trace_correctness_change": [d for e in paired for d in e["minus_vanilla"][arm]["value_accuracy"]["values"]],
    }

    def corr(xs):
        if len(xs) < 3 or len(set(xs)) < 2 or len(set(gain)) < 2:
            return None
        return statistics.correlation(xs, gain)

    return {name: corr(xs) for name, xs in against.items()}


def axis_pooled(entries: list[dict], arm: str, heat_x: str) -> dict[str, dict]:
    """``arm`` minus vanilla pooled (:func:`pooled`) over each row label's cells, then over each value of the
    heat map's column knob: the two axes of a labelled map (length and wording) read one at a time. Empty unless the
    cells carry row labels and there are at least two rows or two columns."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        if "row" in e:
            groups.setdefault(f"row {e['row']}", []).append(e)
    for e in sorted((e for e in entries if "row" in e and heat_x in e["cell"]), key=lambda e: e["cell"][heat_x]):
        groups.setdefault(f"{heat_x}={e['cell'][heat_x]}", []).append(e)
    if len(groups) < 3:  # one row and one column: nothing beyond the pooled line
        return {}
    return {name: summary for name, group in groups.items() if (summary := pooled(group, arm))}


def axis_line(arm: str, axes: dict[str, dict]) -> str:
    # one pair has no spread: its "± 0.000" would read as a measured one
    parts = [f"{name} {s['accuracy']['mean']:+.3f}" + (f" ± {s['accuracy']['std']:.3f}" if s["pairs"] > 1 else "") +
             f" ({s['pairs']} pair{'s' * (s['pairs'] != 1)}, ahead {s['ahead']}, behind {s['behind']})"
             for name, s in axes.items()]
    return f"By row and by column, {arm} - vanilla accuracy pooled over each one's paired runs: {'; '.join(parts)}."


def pooled_line(arm: str, summary: dict) -> str:
    d = summary["accuracy"]
    ties = summary["pairs"] - summary["ahead"] - summary["behind"]
    per_seed = "; ".join(f"seed {seed} {v['mean']:+.3f} ({v['cells']} cell{'s' * (v['cells'] != 1)})" for seed, v in summary["per_seed"].items())
    return (f"Pooled, {arm} - vanilla accuracy over the {summary['pairs']} paired runs of {summary['cells']} cells: "
            f"{d['mean']:+.3f} ± {d['std']:.3f} (mean ± sample std); ahead in {summary['ahead']}, behind in "
            f"{summary['behind']}, tied in {ties}. Per seed, over its cells: {per_seed}. (The cells are different "
            "regimes and one seed's runs share their test questions across cells, so the pairs are not independent; "
            "the per-seed means are the conservative reading.)" + correlation_sentence(summary))


def correlation_sentence(summary: dict) -> str:
    c = summary.get("correlations") or {}
    if any(c.get(k) is None for k in ("vanilla_consistency", "consistency_change", "trace_correctness_change")):
        return ""
    return (f" Over the same pairs, the accuracy difference correlates {c['vanilla_consistency']:+.2f} with vanilla's "
            f"own answer-trace consistency, {c['consistency_change']:+.2f} with the change in consistency and "
            f"{c['trace_correctness_change']:+.2f} with the change in how often the trace concludes the right value "
            "(Pearson r; the last two partly by construction).")


def run_label(name: str, cell: dict, rows: dict[str, str], heat_x: str) -> str:
    """A cell's short name: its row label and column value for labelled --cells ("r22 trace_entropy=1"), else its
    knobs."""
    return f"{rows[name]} {heat_x}={cell[heat_x]}" if name in rows and heat_x in cell else name


def runs_table(records: dict[tuple[str, int, str], dict], cell_list: list[dict], seeds: list[int], arms: list[str],
               rows: dict[str, str], heat_x: str) -> str:
    """Every finished run, one row each (cells in the command's order, then seeds, then arms): the per-run
    figures behind the cell means, unfinished pairs included."""
    from scale_vlm.report import markdown_table

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = ["cell", "seed", "arm", "think/answer ratio", "accuracy", "malformed", "answer follows own trace",
              "trace concludes the right value", "think loss, last 3 logs", "answer loss, last 3 logs", "majority",
              "CPU s"]
    table = []
    for cell in cell_list:
        name = cell_name(cell)
        for seed in seeds:
            for arm in arms:
                r = records.get((name, seed, arm))
                if r is None:
                    continue
                table.append([run_label(name, cell, rows, heat_x), str(seed), arm, fmt(r.get("think_answer_ratio"), ".1f"),
                              fmt(r["accuracy"], ".3f"), fmt(r.get("malformed_rate"), ".3f"),
                              fmt(r.get("letter_consistency"), ".3f"), fmt(r.get("value_accuracy"), ".3f"),
                              fmt(r.get("final_loss_think"), ".3f"), fmt(r.get("final_loss_answer"), ".4f"),
                              fmt(r.get("majority"), ".3f"), fmt(r.get("cpu_seconds"), ".0f")])
    return markdown_table(header, table) if table else ""


def status_line(records: dict[tuple[str, int, str], dict], cell_list: list[dict], seeds: list[int], arms: list[str],
                rows: dict[str, str], heat_x: str) -> str:
    """How much of the command's design has a record, and which runs have none, per cell (a map that spans
    sessions resumes from these)."""
    design = len(cell_list) * len(seeds) * len(arms)
    done, missing = design, []
    for cell in cell_list:
        name = cell_name(cell)
        runs = [f"{a} {s}" for s in seeds for a in arms if (name, s, a) not in records]
        done -= len(runs)
        if runs:
            missing.append(f"{run_label(name, cell, rows, heat_x)} ({', '.join(runs)})")
    line = f"Recorded: {done} of the {design} runs of this command ({len(cell_list)} cells x {len(seeds)} seeds x " \
           f"{len(arms)} arms)"
    return line + (f"; not yet run (arm seed): {'; '.join(missing)}." if missing else ".")


def report_tables(records: dict[tuple[str, int, str], dict], cell_list: list[dict], seeds: list[int],
                  arms: list[str]) -> list[dict]:
    """The map's tables: one per SCALe arm of ``arms``, pairing it seed by seed with vanilla and with the SCALe arms
    listed before it (so a later arm's table compares the schedules on the same runs); ``arms`` alone when it has no
    SCALe arm. ``records`` may hold vanilla runs an arm-only command did not train: they pair with its arm. An arm
    without any record (vanilla never run) is left out of the tables."""
    present = [a for a in arms if any(key[2] == a for key in records)]
    scale_arms = [a for a in arms if a != "vanilla"]
    groups = [[a for a in ["vanilla", *scale_arms[:k + 1]] if a in present or a == arm]
              for k, arm in enumerate(scale_arms)] or [list(arms)]
    tables = []
    for group in groups:
        entries = aggregate(records, cell_list, seeds, group)
        tables.append({"arms": group, "cells": entries,
                       "pooled": {a: pooled(entries, a) for a in group if a != "vanilla"}})
    return tables


def paired_line(entries: list[dict], arm: str, base: str) -> str:
    """``arm`` minus ``base`` accuracy over the runs of ``entries`` where both have a record (the same seeds of the
    same cells): how two SCALe schedules compare on the same data; "" where fewer than one pair exists."""
    from scale_vlm.report import seed_stats

    diffs = [a - b for e in entries if arm in e["arms"] and base in e["arms"]
             for a, b in zip(e["arms"][arm]["accuracy"]["values"], e["arms"][base]["accuracy"]["values"])]
    if not diffs:
        return ""
    d = seed_stats(diffs)
    ahead, behind = sum(x > TIE for x in diffs), sum(x < -TIE for x in diffs)
    return (f"Paired, {arm} - {base} accuracy over the same {len(diffs)} runs: {d['mean']:+.3f} ± {d['std']:.3f} "
            f"(mean ± sample std); ahead in {ahead}, behind in {behind}, tied in {len(diffs) - ahead - behind}.")


def cell_table(entries: list[dict], arms: list[str], summaries: dict | None = None, axes: dict | None = None) -> str:
    """One table of the map: the seeds line, one row per cell, then the pooled line of each SCALe arm against vanilla
    (``summaries``: ``pooled`` per arm, computed here when not given), its pooled line per row and per column
    (``axes``: :func:`axis_pooled` per arm, when given) and each later SCALe arm against the first."""
    from scale_vlm.report import markdown_table, mean_std

    header = ["cell", "seeds", "think/answer tokens", "vanilla final think loss", "majority"]
    header += [f"{a} accuracy" for a in arms] + [f"{a} - vanilla accuracy" for a in arms if a != "vanilla"]
    header += [f"{a} - vanilla consistency" for a in arms if a != "vanilla"]
    rows = []
    for e in entries:
        van = e["arms"].get("vanilla", {})
        # the seeds of this cell: one seed has no spread (its "± 0.000" is not a measured one)
        row = [cell_name(e["cell"]), ",".join(map(str, e["seeds"])), f"{e['think_answer_ratio']:.1f}",
               mean_std(van["final_loss_think"]) if "final_loss_think" in van else "-", mean_std(e["majority"])]
        row += [mean_std(e["arms"][a]["accuracy"]) for a in arms]
        # no vanilla record to pair with (e.g. --arms adaptive alone, vanilla never run): no paired difference, "-"
        row += [mean_std(e["minus_vanilla"][a]["accuracy"], separator=" ± ") if a in e["minus_vanilla"] else "-"
                for a in arms if a != "vanilla"]
        row += [mean_std(e["minus_vanilla"][a]["letter_consistency"]) if a in e["minus_vanilla"] else "-"
                for a in arms if a != "vanilla"]
        rows.append(row)
    seeds = sorted({s for e in entries for s in e["seeds"]})
    if summaries is None:
        summaries = {a: pooled(entries, a) for a in arms if a != "vanilla"}
    lines = [pooled_line(a, summary) for a, summary in summaries.items() if summary]
    lines += [axis_line(a, by) for a, by in (axes or {}).items() if by]
    scale_arms = [a for a in arms if a != "vanilla"]
    lines += [line for a in scale_arms[1:] if (line := paired_line(entries, a, scale_arms[0]))]
    return "\n".join([f"Seeds: {', '.join(map(str, seeds))} (mean ± sample std over a cell's seeds, 0 for a single "
                      "seed; differences are paired per seed)", "", markdown_table(header, rows), ""] +
                     [line + "\n" for line in lines])


def table_title(arms: list[str]) -> str:
    """A table's heading: its SCALe arm (the last) against the arms it is paired with."""
    arm = [a for a in arms if a != "vanilla"][-1]
    others = [a for a in arms if a != arm]
    if len(others) > 1:
        return f"## {arm} against {' and '.join(others)}, on the runs that have all {len(arms)}"
    return f"## {arm} against {others[0]}" if others else f"## {arm}"


def format_markdown(tables: list[dict], command: str, runs: str = "", status: str = "") -> str:
    """The map's report: the command, the design's status line when given, each table of ``report_tables`` (under
    its own heading when there are several) and, when given, the table of every run."""
    head = [f"Command: `{command}`", ""] + ([status, ""] if status else [])
    body = []
    for t in tables:
        if len(tables) > 1:
            body += [table_title(t["arms"]), ""]
        body += [cell_table(t["cells"], t["arms"], t["pooled"], t.get("axes"))]
    every = ["## Every run", "", runs, ""] if runs else []
    return "\n".join(head + body + every)


def heat_axes(cell_list: list[dict], rows: dict[str, str], heat_x: str) -> tuple[str, list, str, list] | None:
    """The heat map's axes: ``heat_x``'s values across and the row labels down when the cells are labelled, else the
    two knobs of a two-knob grid; None when neither applies."""
    if rows:
        xs = sorted({c[heat_x] for c in cell_list if heat_x in c})
        ys = list(dict.fromkeys(rows.values()))
        return (heat_x, xs, "row", ys) if xs else None
    names = list(dict.fromkeys(k for c in cell_list for k in c))
    if len(names) != 2:
        return None
    xs, ys = (list(dict.fromkeys(c[n] for c in cell_list)) for n in names)
    return names[0], xs, names[1], ys


def plot_map(entries: list[dict], axes: tuple[str, list, str, list], arm: str, path: Path) -> None:
    """Heat map of ``arm`` minus vanilla accuracy over the cells (mean, with the std written in each cell)."""
    from scale_vlm.report import pyplot, save_figure

    xn, xs, yn, ys = axes
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(xs) + 2, 1.3 * len(ys) + 1.5))
    import math

    values = [[math.nan] * len(xs) for _ in ys]
    labels = [[""] * len(xs) for _ in ys]
    for e in entries:
        d = e["minus_vanilla"].get(arm, {}).get("accuracy")
        y = e.get("row") if yn == "row" else e["cell"].get(yn)
        if d and y in ys and e["cell"].get(xn) in xs:
            i, j = ys.index(y), xs.index(e["cell"][xn])
            values[i][j] = d["mean"]
            labels[i][j] = f"{d['mean']:+.3f}\n± {d['std']:.3f}\nratio {e['think_answer_ratio']:.0f}"
    im = ax.imshow(values, cmap="RdBu", vmin=-0.1, vmax=0.1, origin="lower")
    for i in range(len(ys)):
        for j in range(len(xs)):
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(xn)
    ax.set_ylabel("think/answer ratio row" if yn == "row" else yn)
    ax.set_title(f"{arm} minus vanilla accuracy")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from scale_vlm.demo import DemoConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    design = parser.add_mutually_exclusive_group()
    design.add_argument("--grid", nargs="+", help="KNOB=v1,v2 ...: the cells are every combination")
    design.add_argument("--cells", nargs="+", help="[ROW:]KNOB=v,KNOB=v ...: the cells one by one")
    parser.add_argument("--heat_x", default="trace_entropy", help="the heat map's column knob for labelled --cells")
    parser.add_argument("--records_dir", help="also write each run's record here (small JSON, to commit) and "
                                              "resume from it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["vanilla", "scale"], choices=list(ARMS))
    parser.add_argument("--output_dir", default="runs/regime-map")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (one thread each)")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: the map of the runs whose records exist (e.g. while others still train)")
    args, rest = parser.parse_known_args(argv)
    demo_fields = {f.name: f for f in fields(DemoConfig)}
    extra, i = {}, 0
    while i < len(rest):  # --name value pairs forwarded to DemoConfig (the training budget, schedule, ...)
        name = rest[i].lstrip("-")
        if name not in demo_fields or i + 1 >= len(rest):
            parser.error(f"unknown option or missing value: {rest[i]}")
        default = demo_fields[name].default
        extra[name] = (rest[i + 1].lower() in ("1", "true", "yes")) if isinstance(default, bool) else \
            type(default)(rest[i + 1])
        i += 2
    if args.cells:
        cell_list, rows = parse_cells(args.cells)
    else:
        cell_list, rows = cells(parse_grid(args.grid or ["trace_verbosity=0,2", "trace_entropy=0,2"])), {}
    out = Path(args.output_dir)
    records_dir = Path(args.records_dir) if args.records_dir else None
    jobs = []
    for cell in cell_list:
        for seed in args.seeds:
            for arm in args.arms:
                folder = out / cell_name(cell) / f"seed{seed}" / arm
                cfg = DemoConfig(**{**extra, **cell, "seed": seed, "output_dir": str(folder), "progress": False,
                                    "parallel_methods": False})
                kept = records_dir / cell_name(cell) / f"seed{seed}" / f"{arm}.json" if records_dir else None
                jobs.append(((cell_name(cell), seed, arm), cfg, folder, kept))
    # vanilla runs of earlier commands pair with an arm-only command's runs (read, never trained by it)
    paired = [] if "vanilla" in args.arms else [
        ((cell_name(cell), seed, "vanilla"), out / cell_name(cell) / f"seed{seed}" / "vanilla",
         records_dir / cell_name(cell) / f"seed{seed}" / "vanilla.json" if records_dir else None)
        for cell in cell_list for seed in args.seeds]
    records = {}
    for key, folder, kept in [(key, folder, kept) for key, _, folder, kept in jobs] + paired:
        for path in (kept, folder / "record.json"):
            if path is not None and path.exists():
                records[key] = json.loads(path.read_text())
                break
    todo = [job for job in jobs if job[0] not in records]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done, {len(todo)} to train"
          f"{' (not now: --report_only)' if args.report_only else ''}", flush=True)
    if todo and not args.report_only:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, cfg, key[2], folder, kept): key for key, cfg, folder, kept in todo}
            for fut in as_completed(futures):
                key = futures[fut]
                records[key] = fut.result()
                print(f"done {key}: accuracy {records[key]['accuracy']:.3f}", flush=True)
    report_arms = args.arms if "vanilla" in args.arms else ["vanilla", *args.arms]
    tables = report_tables(records, cell_list, args.seeds, report_arms)
    for t in tables:
        for e in t["cells"]:
            if cell_name(e["cell"]) in rows:
                e["row"] = rows[cell_name(e["cell"])]
        t["axes"] = {a: by for a, summary in t["pooled"].items() if summary
                     and (by := axis_pooled(t["cells"], a, args.heat_x))}
    command = "python scripts/regime_map.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = format_markdown(tables, command, runs_table(records, cell_list, args.seeds, report_arms, rows, args.heat_x),
                           status_line(records, cell_list, args.seeds, args.arms, rows, args.heat_x))
    axes = heat_axes(cell_list, rows, args.heat_x)
    for folder in [out] + ([records_dir] if records_dir else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "map.json").write_text(json.dumps({"command": command, "tables": tables}, indent=1) + "\n")
        (folder / "map.md").write_text("# SCALe regime map\n\n" + text)
        if axes:  # each SCALe arm's heat map from its own table (the first that pairs it with vanilla)
            for t in tables:
                arm = t["arms"][-1]
                if arm != "vanilla" and "vanilla" in t["arms"]:
                    plot_map(t["cells"], axes, arm, folder / f"map_{arm}.png")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
