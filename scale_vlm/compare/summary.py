"""The comparison's statistics over seeds and its report (``results.md``, ``accuracy_vs_time.png``)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..report import (
    first_last_window,
    markdown_table,
    over_seeds,
    plot_accuracy_vs_time,
    probe_budget_note,
    seed_stats,
)
from .config import ARM_LABELS, ARMS, RECORD_SETTINGS_BEFORE, REFERENCE_ARM

GRPO_ARMS = ("sft_grpo", "scale_grpo")
GRPO_PROMPTS_SAID = {"held_out": "questions SFT did not train on", "sft_rows": "the first SFT training questions"}
ARM_COLOURS = {"sft": "tab:blue", "scale": "tab:red", "sft_grpo": "tab:cyan", "scale_grpo": "tab:orange"}
SUMMARY_METRICS = ("accuracy", "malformed_rate", "mean_think_tokens", "train_seconds", "sft_seconds", "grpo_seconds",
                   "sft_supervised_tokens", "grpo_generated_tokens")


def summarize(per_seed: dict[int, dict]) -> dict:
    """Per arm: mean and sample standard deviation over seeds (and min/max of accuracy), time ratios."""
    stats = over_seeds(per_seed, ARMS, SUMMARY_METRICS)
    summary = {}
    for arm in ARMS:
        entry = {"label": ARM_LABELS[arm], "num_seeds": len(per_seed)}
        for key in SUMMARY_METRICS:
            entry[f"{key}_mean"], entry[f"{key}_std"] = stats[arm][key]["mean"], stats[arm][key]["std"]
        entry["accuracy_min"], entry["accuracy_max"] = stats[arm]["accuracy"]["min"], stats[arm]["accuracy"]["max"]
        summary[arm] = entry
    reference = summary[REFERENCE_ARM]["train_seconds_mean"]
    for arm in ARMS:
        summary[arm]["time_vs_sft_grpo"] = summary[arm]["train_seconds_mean"] / reference if reference else None
    return summary


# The paper's questions as paired differences (same seed: same data, order and initialisation in both arms):
# (arm, minus arm, what the difference answers).
PAIRED = (
    ("scale", "sft", "SCALe-SFT - vanilla SFT: does SCALe beat vanilla SFT?"),
    ("sft_grpo", "sft", "vanilla SFT -> GRPO - vanilla SFT: what GRPO adds after vanilla SFT"),
    ("scale_grpo", "scale", "SCALe-SFT -> GRPO - SCALe-SFT: what GRPO adds after SCALe-SFT"),
    ("scale", "sft_grpo", "SCALe-SFT - vanilla SFT -> GRPO: does SCALe-SFT reach SFT+GRPO?"),
    ("scale_grpo", "sft_grpo", "SCALe-SFT -> GRPO - vanilla SFT -> GRPO: is SCALe+GRPO the best?"),
)


def paired_differences(per_seed: dict[int, dict], metric: str = "accuracy") -> list[dict]:
    """The :data:`PAIRED` differences of ``metric``, seed by seed, with their :func:`~scale_vlm.report.seed_stats`.
    Paired because the arms of one seed share their test questions: the test-sampling noise of one seed's accuracy
    (about ±3.5 points at 200 questions) largely cancels in the difference."""
    return [{"arm": arm, "minus": minus, "question": question,
             **seed_stats(per_seed[s][arm][metric] - per_seed[s][minus][metric] for s in per_seed)}
            for arm, minus, question in PAIRED]


def reward_window(grpo_steps: int) -> int:
    """Steps averaged at each end of a GRPO reward curve: a third of the run (8 of the default 24 steps)."""
    return max(1, grpo_steps // 3)


def grpo_reward_windows(results: dict) -> dict:
    """Mean GRPO reward over the first and the last :func:`reward_window` steps, per GRPO arm and pooled over
    every GRPO run (both arms, all seeds)."""
    window = reward_window(results["config"]["grpo_steps"])
    curves = {arm: [results["per_seed"][str(seed)][arm].get("grpo_curve", []) for seed in results["seeds"]]
              for arm in GRPO_ARMS}
    return {"all": first_last_window([c for arm in GRPO_ARMS for c in curves[arm]], window),
            **{arm: first_last_window(curves[arm], window) for arm in GRPO_ARMS}}


def grpo_prompt_share(results: dict, key: str = "accuracy") -> dict[str, float | None]:
    """Per seed: the correlation over steps of the two GRPO arms' ``key`` rewards. Both arms see the same prompts in
    the same order, so what they share step by step is mostly how hard that step's prompts were: a high value says
    the curve's ups and downs are the prompts', not the policy's. ``None`` where a curve is missing or constant."""
    out = {}
    for seed in results["seeds"]:
        arms = results["per_seed"][str(seed)]
        a, b = ([p.get(key) for p in arms[arm].get("grpo_curve", [])] for arm in GRPO_ARMS)
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        out[str(seed)] = (statistics.correlation(a, b) if n > 2 and None not in a + b
                          and len(set(a)) > 1 and len(set(b)) > 1 else None)
    return out


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_markdown(results: dict) -> str:
    cfg, summary = results["config"], results["summary"]
    seeds = results["seeds"]
    main_rows = [[s["label"], f"{s['accuracy_mean']:.3f} +- {s['accuracy_std']:.3f}", f"{s['malformed_rate_mean']:.3f}",
                  f"{s['mean_think_tokens_mean']:.1f}", f"{s['train_seconds_mean']:.0f} +- {s['train_seconds_std']:.0f}",
                  _ratio(s["time_vs_sft_grpo"])] for s in (summary[arm] for arm in ARMS)]
    cost_rows = [[s["label"], f"{s['sft_seconds_mean']:.0f}", f"{s['grpo_seconds_mean']:.0f}",
                  f"{s['sft_supervised_tokens_mean']:.0f}", f"{s['grpo_generated_tokens_mean']:.0f}",
                  f"{s['accuracy_min']:.3f}..{s['accuracy_max']:.3f}"] for s in (summary[arm] for arm in ARMS)]
    ratio = results["scale_sft_time_over_sft_grpo_time"]
    lines = [
        (f"# scale-vlm compare ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}"
         f"{', quick' if cfg['quick'] else ''})"),
        "",
        (f"SFT: {cfg['sft_steps']} steps x {cfg['sft_batch_size']} of {cfg['num_train']} questions. "
         f"GRPO: {cfg['grpo_steps']} steps x {cfg['grpo_batch_size']} completions ({cfg['num_generations']} per "
         f"prompt, max {cfg['max_completion_length']} tokens, loss {cfg['loss_type']}, learning rate "
         f"{cfg['grpo_learning_rate']:g}, KL {cfg['beta']:g}, temperature {cfg['temperature']:g}) on "
         f"{cfg['num_grpo_prompts']} prompts, "
         f"{GRPO_PROMPTS_SAID[cfg.get('grpo_prompts', RECORD_SETTINGS_BEFORE['grpo']['grpo_prompts'])]}. "
         f"Evaluation: {cfg['num_test']} "
         f"held-out questions, greedy, max {cfg['max_new_tokens']} tokens. Mean +- sample std over seeds."),
        "",
        markdown_table(("arm", "accuracy", "malformed rate", "think tokens", "training time (s)",
                        "time relative to SFT+GRPO"), main_rows),
        "",
        f"SCALe-SFT time / SFT+GRPO time: {'-' if ratio is None else f'{ratio:.3f}'}",
        "",
        markdown_table(("arm", "SFT s", "GRPO s", "SFT supervised tokens", "GRPO generated tokens",
                        "accuracy min..max"), cost_rows),
        "",
        f"Accuracy differences, paired per seed (seeds {', '.join(map(str, seeds))}; mean +- sample std):",
        "",
        markdown_table(("difference", "per seed", "mean +- std"),
                       [[d["question"], ", ".join(f"{v:+.3f}" for v in d["values"]),
                         f"{d['mean']:+.3f} +- {d['std']:.3f}"]
                        for d in paired_differences({s: results["per_seed"][str(s)] for s in seeds})]),
        "",
        "GRPO mean reward (weighted sum of accuracy and format rewards), first -> last step, per seed (one step is a "
        "few prompts: the step's prompts move it as much as the policy does; the windows below and the paired "
        "accuracies above are the measure):",
        "",
    ]
    for arm in GRPO_ARMS:
        for seed in seeds:
            curve = results["per_seed"][str(seed)][arm].get("grpo_curve", [])
            if curve:
                lines.append(f"- {ARM_LABELS[arm]}, seed {seed}: {curve[0]['reward']:.3f} -> {curve[-1]['reward']:.3f}"
                             f" (accuracy reward {curve[0].get('accuracy', 0):.3f} -> {curve[-1].get('accuracy', 0):.3f},"
                             f" {len(curve)} steps)")
    windows = grpo_reward_windows(results)
    if windows["all"]["pooled"]:
        window, steps = windows["all"]["window"], cfg["grpo_steps"]
        lines += ["", f"GRPO mean reward, first vs last {window} of {steps} steps:", ""]
        for name, label in (("all", f"pooled over all {len(windows['all']['per_run'])} GRPO runs"),
                            *((arm, f"{ARM_LABELS[arm]}, pooled over seeds") for arm in GRPO_ARMS)):
            pooled = windows[name]["pooled"]
            if pooled:
                lines.append(f"- {label}: {pooled['first']:.3f} -> {pooled['last']:.3f}")
    probes = [(arm, seed, results["per_seed"][str(seed)][arm].get("grpo_probe"))
              for arm in GRPO_ARMS for seed in seeds]
    if any(probe for _, _, probe in probes):
        lines += ["", f"Greedy probe: accuracy on the first {cfg['grpo_probe_size']} test questions, greedy as in the "
                  f"evaluation, before GRPO and every {cfg['grpo_probe_every']} steps (the scored answer; the reward "
                  "above is on sampled completions), first -> last probe, per seed:", ""]
        lines += [f"- {ARM_LABELS[arm]}, seed {seed}: {probe[0]['accuracy']:.3f} -> {probe[-1]['accuracy']:.3f} "
                  f"(min {min(r['accuracy'] for r in probe):.3f}, max {max(r['accuracy'] for r in probe):.3f}, "
                  f"{len(probe)} probes, malformed {probe[0]['malformed_rate']:.3f} -> {probe[-1]['malformed_rate']:.3f}"
                  f"{probe_budget_note(probe)})"
                  for arm, seed, probe in probes if probe]
    shared = {seed: r for seed, r in grpo_prompt_share(results).items() if r is not None}
    if shared:
        lines += ["", "Correlation over steps of the two GRPO arms' accuracy rewards (same prompts, same order; how "
                  "much of a curve's movement is the prompts'), per seed: "
                  + ", ".join(f"seed {seed} {r:.2f}" for seed, r in shared.items())]
    lines += ["", "Plot: accuracy_vs_time.png."]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, path: Path) -> None:
    summary = results["summary"]
    points = {arm: {"label": summary[arm]["label"],
                    "accuracy": {"mean": summary[arm]["accuracy_mean"], "std": summary[arm]["accuracy_std"]},
                    "seconds": {"mean": summary[arm]["train_seconds_mean"], "std": summary[arm]["train_seconds_std"]}}
              for arm in ARMS}
    curves = {arm: [results["per_seed"][str(seed)][arm].get("grpo_curve", []) for seed in results["seeds"]]
              for arm in GRPO_ARMS}
    plot_accuracy_vs_time(points, curves, ARM_COLOURS, path,
                          title=f"accuracy vs training time ({len(results['seeds'])} seed(s))")
