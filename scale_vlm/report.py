"""What the demo, the comparison, the scripts and the benchmarks report: statistics over seeds, markdown tables,
figures, and the GRPO reward curve read from a trainer log.

Pure functions of results dictionaries; the figure helpers write PNG files and nothing else.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

# TRL's GRPO log keys of the metrics every GRPO report shows (``reward`` is the weighted sum of the rewards). The
# last two say whether GRPO can learn at all: the policy's mean token entropy (how varied its samples are) and the
# share of groups whose completions all earned the same reward (zero advantage, so no gradient from them).
GRPO_LOG_KEYS = {"reward": "reward", "accuracy": "rewards/accuracy_reward/mean", "format": "rewards/format_reward/mean",
                 "completion_length": "completions/mean_length", "entropy": "entropy",
                 "groups_without_signal": "frac_reward_zero_std"}
# The evaluation metrics that the demo's and the comparison's results keep per arm.
EVAL_METRICS = ("accuracy", "malformed_rate", "mean_think_tokens", "median_think_tokens", "mean_answer_tokens",
                "num_examples")
# Colours of the demo methods and the comparison arms, so a method looks the same in every figure.
METHOD_COLOURS = {"vanilla": "tab:blue", "scale": "tab:red"}


# ------------------------------------------------------------------------------------------------ statistics


def majority_baseline(reference_answers, test_answers) -> dict:
    """Accuracy of always giving the most common of ``reference_answers`` (the training golds, or the evaluated
    golds themselves) on ``test_answers``: what a model that ignores the image and question scores."""
    from collections import Counter

    answer, _ = Counter(reference_answers).most_common(1)[0]
    acc = sum(a == answer for a in test_answers) / len(test_answers)
    return {"answer": answer, "accuracy": round(acc, 4)}



def seed_stats(values: Iterable[float]) -> dict:
    """Mean, sample standard deviation (0 for a single seed), min, max and the values themselves."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("seed_stats needs at least one value")
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def over_seeds(per_seed: dict, groups: Iterable[str], metrics: Iterable[str]) -> dict:
    """``{group: {metric: seed_stats}}`` of ``per_seed[seed][group][metric]`` over the seeds (in ``per_seed``'s
    order, which fixes the floating-point sums)."""
    metrics = tuple(metrics)
    return {g: {m: seed_stats(per_seed[s][g][m] for s in per_seed) for m in metrics} for g in groups}


def mean_std(stats: dict, digits: int = 3, separator: str = " ± ") -> str:
    """``mean ± std`` of a :func:`seed_stats` record."""
    return f"{stats['mean']:.{digits}f}{separator}{stats['std']:.{digits}f}"


# ---------------------------------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ GRPO curves


def reward_curve(log_history: list[dict]) -> list[dict]:
    """Per-step GRPO metrics from a trainer log: step, mean reward, accuracy/format reward, completion length."""
    return [{"step": h["step"], **{k: h[v] for k, v in GRPO_LOG_KEYS.items() if v in h}}
            for h in log_history if "reward" in h]


def probe_curve(log_history: list[dict]) -> list[dict]:
    """The greedy probe's rows of a GRPO log (``GreedyProbe``): step, accuracy, malformed rate, seconds, and the
    share of answers cut off by the generation budget (absent from logs written before the probe measured it)."""
    return [{"step": h["step"], "accuracy": h["probe/accuracy"], "malformed_rate": h["probe/malformed_rate"],
             "seconds": h["probe/seconds"],
             **({"budget_hit_rate": h["probe/budget_hit_rate"]} if "probe/budget_hit_rate" in h else {})}
            for h in log_history if "probe/accuracy" in h]


def probe_budget_note(probe: list[dict]) -> str:
    """"" or, where any probe's greedy answers ran out of the generation budget, how many at worst: a probe that
    stays flat because its answers are cut off says nothing about the policy, so the summary must say so."""
    worst = max((row.get("budget_hit_rate", 0.0) for row in probe), default=0.0)
    return f", up to {worst:.3f} of its answers cut off by the generation budget" if worst > 0 else ""


def window_means(curve: list[dict], window: int, key: str = "reward") -> list[dict]:
    """Mean of ``key`` over consecutive windows of ``window`` steps: ``[{"first_step", "last_step", "mean"}]``."""
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    return [{"first_step": chunk[0]["step"], "last_step": chunk[-1]["step"],
             "mean": statistics.fmean(row[key] for row in chunk)}
            for chunk in (curve[start:start + window] for start in range(0, len(curve), window))]


def first_last_window(curves: list[list[dict]], window: int, key: str = "reward") -> dict:
    """Mean of ``key`` over the first and over the last ``window`` steps of each curve, and pooled over all the
    curves' steps (the pooled figure the README quotes): ``{"window", "steps", "per_run", "pooled"}``."""
    curves = [c for c in curves if c]
    first = [[row[key] for row in c[:window]] for c in curves]
    last = [[row[key] for row in c[-window:]] for c in curves]
    pooled_first, pooled_last = [v for run in first for v in run], [v for run in last for v in run]
    return {
        "window": window, "steps": [len(c) for c in curves],
        "per_run": [{"first": statistics.fmean(f), "last": statistics.fmean(s)} for f, s in zip(first, last)],
        "pooled": {"first": statistics.fmean(pooled_first), "last": statistics.fmean(pooled_last)} if curves else None,
    }


# --------------------------------------------------------------------------------------------------- figures


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display is needed or opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def plot_training_curves(histories: dict[str, list[dict]], path: str | Path) -> None:
    """Think and answer losses of each SFT method over optimizer steps, and SCALe's schedule weights."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for method, hist in histories.items():
        rows = [h for h in hist if "loss_think" in h]
        steps = [h["step"] for h in rows]
        axes[0].plot(steps, [h["loss_think"] for h in rows], color=METHOD_COLOURS[method], label=method)
        axes[1].plot(steps, [h["loss_answer"] for h in rows], color=METHOD_COLOURS[method], label=method)
        if method == "scale":
            axes[2].plot(steps, [h["w_think"] for h in rows], color="tab:purple", label="w_think")
            axes[2].plot(steps, [h["w_answer"] for h in rows], color="tab:orange", label="w_answer")
            progress = [h for h in rows if "schedule_progress" in h]
            if progress:  # the adaptive schedule: how far its loss-driven progress got, on the weights' 0-1 axis
                axes[2].plot([h["step"] for h in progress], [h["schedule_progress"] for h in progress],
                             color="tab:gray", linestyle="--", label="schedule progress (adaptive)")
    titles = ("think loss (token mean)", "answer loss (token mean)", "SCALe schedule weights")
    ylabels = ("think-segment loss (nats/token, log scale)", "answer-segment loss (nats/token, log scale)", "weight")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:  # a vanilla run alone has no schedule weights to show
            ax.legend()
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    save_figure(fig, path)


def plot_accuracy_vs_time(points: dict[str, dict], curves: dict[str, list[list[dict]]], colours: dict[str, str],
                          path: str | Path, title: str) -> None:
    """Left: accuracy against training time per arm (``points[arm]``: label and the seed statistics of accuracy
    and training time, as error bars). Right: the GRPO mean reward per step of every run in ``curves[arm]``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for arm, p in points.items():
        ax.errorbar(p["seconds"]["mean"], p["accuracy"]["mean"], xerr=p["seconds"]["std"], yerr=p["accuracy"]["std"],
                    fmt="o", capsize=4, color=colours[arm], label=p["label"])
    ax.set_xlabel("training time (s, SFT + GRPO stages)")
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax = axes[1]
    for arm, runs in curves.items():
        for i, curve in enumerate(runs):
            ax.plot([c["step"] for c in curve], [c["reward"] for c in curve], color=colours[arm], alpha=0.8,
                    label=points[arm]["label"] if i == 0 else None)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO mean reward")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_reward_curve(curve: list[dict], path: str | Path, smooth: int = 10) -> None:
    """Mean, accuracy and format reward of one GRPO run, each as a trailing ``smooth``-step mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [row["step"] for row in curve]
    for name in ("reward", "accuracy", "format"):
        ys = [row[name] for row in curve]
        trailing = [statistics.fmean(ys[max(0, i - smooth + 1):i + 1]) for i in range(len(ys))]
        ax.plot(steps, trailing, label=f"{name} ({smooth}-step mean)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)


# ------------------------------------------------------------------------------------------------ model card


def final_segment_losses(log_history: list[dict]) -> dict | None:
    """The last logged training think/answer losses (and weights): ``{"step", "loss_think", "loss_answer", ...}``."""
    rows = [h for h in log_history if "loss_think" in h and "loss_answer" in h]
    if not rows:
        return None
    last = rows[-1]
    return {k: last[k] for k in ("step", "loss_think", "loss_answer", "w_think", "w_answer", "schedule_progress")
            if k in last}


def sft_model_card(run: dict) -> str:
    """The model card (``README.md``) of a ``scale-vlm sft`` run, from ``run``: ``base``, ``output_dir``, ``method``,
    ``schedule`` (a sentence), ``lora`` (a sentence or None), ``dataset``, ``data_report`` (PreparationReport
    dict), ``steps``, ``epochs``, ``final`` (:func:`final_segment_losses`), ``eval`` (metrics or None),
    ``prompt_form`` (dict or None) and ``plot`` (file name or None)."""
    report, final = run["data_report"], run["final"]
    method = "SCALe (think and answer segments, each averaged over its own tokens, weighted by the schedule)" \
        if run["method"] == "scale" else "vanilla SFT (token-mean cross-entropy over the response)"
    rows = [("base model", f"`{run['base']}`"), ("method", method)]
    if run["method"] == "scale":
        rows.append(("schedule", run["schedule"]))
    rows.append(("weights", run["lora"] or "full fine-tuning"))
    skipped = ", ".join(f"{n} {reason}" for reason, n in report.get("skipped", {}).items())
    rows.append(("data", f"`{run['dataset']}`: {report['kept']} of {report['total']} examples trained on"
                         + (f" (skipped: {skipped})" if skipped else "")))
    think, answer = report["think_tokens"], report["answer_tokens"]
    rows.append(("segment tokens", f"think {think}, answer {answer} (think/answer {think / max(answer, 1):.1f}x)"))
    rows.append(("training", f"{run['steps']} optimizer steps, {run['epochs']:.2f} epochs"))
    if final is not None:
        weights = f" at weights think {final['w_think']:.3f} / answer {final['w_answer']:.3f}" if "w_think" in final else ""
        rows.append(("final segment losses", f"think {final['loss_think']:.4f}, answer {final['loss_answer']:.4f} "
                                             f"(nats/token, step {final['step']}{weights})"))
    for key in ("eval_loss_think", "eval_loss_answer"):
        if run.get("eval") and key in run["eval"]:
            rows.append((key.replace("_", " "), f"{run['eval'][key]:.4f}"))
    if run.get("plot"):
        plot = (run["plot"], "training curves", "Think and answer losses per optimizer step and the schedule weights"
                + (" and the adaptive schedule's progress." if final and "schedule_progress" in final else "."))
    else:
        plot = None
    return _model_card(run, "sft", run["method"], "A vision-language model fine-tuned with `scale-vlm sft` to reason "
                       "inside think tags and answer inside answer tags.", rows, plot, [
                           f"scale-vlm grpo --model_name_or_path {run['output_dir']} --dataset_name {run['dataset']} "
                           "--output_dir grpo-out",
                           f"scale-vlm sft --config {Path(run['output_dir']) / 'scale_config.yaml'} --output_dir NEW"
                           "   # this run again"],
                       "`scale_config.yaml` holds every option of the run, `data_report.json` the data counts, "
                       "`prompt_form.json` the form of the prompts trained on (checked by `scale-vlm eval`).")


def grpo_model_card(run: dict) -> str:
    """The model card (``README.md``) of a ``scale-vlm grpo`` run, from ``run``: ``base``, ``output_dir``, ``lora``
    (a sentence or None), ``dataset``, ``prompts`` (how many), ``rewards`` (``[(name, weight)]``),
    ``num_generations``, ``beta``, ``learning_rate``, ``steps``, ``epochs``, ``curve`` (:func:`reward_curve`),
    ``generated_tokens``, ``prompt_form`` (dict or None), ``plot`` (file name or None) and, with the greedy probe,
    ``probe`` (:func:`probe_curve`) and ``probe_questions`` (what it evaluated, in words)."""
    rewards = " + ".join(f"{weight:g} x {name}" for name, weight in run["rewards"])
    rows = [("policy initialised from", f"`{run['base']}`"),
            ("method", f"GRPO: {run['num_generations']} completions per prompt, KL coefficient {run['beta']:g}, "
                       f"learning rate {run['learning_rate']:g}"),
            ("reward", f"{rewards} (the evaluation's output parser)"),
            ("weights", run["lora"] or "full fine-tuning"),
            ("data", f"`{run['dataset']}`: {run['prompts']} prompts"),
            ("training", f"{run['steps']} optimizer steps, {run['epochs']:.2f} epochs, "
                         f"{run['generated_tokens']} generated tokens")]
    curve = run["curve"]
    if curve:
        first, last = curve[0], curve[-1]
        parts = [f"{key} {first[key]:.3f} -> {last[key]:.3f}" for key in ("reward", "accuracy", "format")
                 if key in first and key in last]
        rows.append(("mean reward per step", f"{', '.join(parts)} (step {first['step']} -> {last['step']}; "
                                             "one step is noisy, the figure smooths it)"))
    probe = run.get("probe")
    if probe:
        rows.append(("greedy probe", f"accuracy {probe[0]['accuracy']:.3f} -> {probe[-1]['accuracy']:.3f}, malformed "
                                     f"{probe[0]['malformed_rate']:.3f} -> {probe[-1]['malformed_rate']:.3f} (step "
                                     f"{probe[0]['step']} -> {probe[-1]['step']}, {run['probe_questions']}, greedy as "
                                     f"scale-vlm eval scores them{probe_budget_note(probe)})"))
    plot = (run["plot"], "reward curves", "Mean, accuracy and format reward per GRPO step (trailing means).") if run.get("plot") else None
    return _model_card(run, "grpo", None, "A vision-language model trained with `scale-vlm grpo` (reinforcement "
                       "learning on the answer-accuracy and format rewards) to reason inside think tags and answer "
                       "inside answer tags.", rows, plot, [],
                       "`log_history.json` holds every logged step (rewards, completion lengths, KL), "
                       "`prompt_form.json` the form of the prompts trained on (checked by `scale-vlm eval`).")


def _model_card(run: dict, stage: str, method: str | None, intro: str, rows: list, plot: tuple | None,
                more_commands: list[str], files: str) -> str:
    """The parts both stages' cards share: front matter, the table, the figure (``(file, alt text, caption)``), the
    commands that use the model."""
    form = run.get("prompt_form")
    if form:
        rows = [*rows, ("prompts", f"{form['template']}; e.g. `{form['examples'][0][:100]!r}`")]
    tags = ["- scale-vlm", f"- {stage}"] + ([f"- {method}"] if method else [])
    lines = ["---", f"base_model: {run['base']}", f"library_name: {'peft' if run['lora'] else 'transformers'}",
             "tags:", *tags, "---", "", f"# {Path(run['output_dir']).name}", "", intro, "",
             markdown_table(("", ""), rows), ""]
    if plot:
        lines += [f"![{plot[1]}]({plot[0]})", "", plot[2], ""]
    lines += ["## Use", "", "```bash",
              f"scale-vlm eval --model_name_or_path {run['output_dir']} --dataset_name {run['dataset']} "
              "--dataset_test_split test --output_dir eval-out", *more_commands, "```", "", files, ""]
    return "\n".join(lines)
