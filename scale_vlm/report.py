"""What the demo, the comparison, the scripts and the benchmarks report: statistics over seeds, markdown tables,
figures, and the GRPO reward curve read from a trainer log.

Pure functions of results dictionaries; the figure helpers write PNG files and nothing else.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

# TRL's GRPO log keys of the metrics every GRPO report shows (``reward`` is the weighted sum of the rewards).
GRPO_LOG_KEYS = {"reward": "reward", "accuracy": "rewards/accuracy_reward/mean", "format": "rewards/format_reward/mean",
                 "completion_length": "completions/mean_length"}
# The evaluation metrics that the demo's and the comparison's results keep per arm.
EVAL_METRICS = ("accuracy", "malformed_rate", "mean_think_tokens", "median_think_tokens", "mean_answer_tokens",
                "num_examples")
# Colours of the demo methods and the comparison arms, so a method looks the same in every figure.
METHOD_COLOURS = {"vanilla": "tab:blue", "scale": "tab:red"}


# ------------------------------------------------------------------------------------------------ statistics


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
    titles = ("think loss (token mean)", "answer loss (token mean)", "SCALe schedule weights")
    ylabels = ("think-segment loss (nats/token, log scale)", "answer-segment loss (nats/token, log scale)", "weight")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
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
