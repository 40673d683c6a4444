"""Summarise a GRPO run's logged reward curve (``scale-vlm grpo`` writes ``log_history.json``).

    python scripts/grpo_reward_curve.py runs/grpo-scale [--window 20] [--png docs/grpo_reward_curve.png]

Prints mean reward, accuracy reward, format reward and completion length over consecutive windows of steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = {"reward": "reward", "accuracy": "rewards/accuracy_reward/mean", "format": "rewards/format_reward/mean",
        "length": "completions/mean_length"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--png", default=None)
    args = p.parse_args()
    steps = [h for h in json.loads((Path(args.run_dir) / "log_history.json").read_text()) if "reward" in h]
    print(f"{'steps':>9}  " + "  ".join(f"{k:>8}" for k in KEYS))
    for start in range(0, len(steps), args.window):
        chunk = steps[start : start + args.window]
        means = [statistics.fmean(h[v] for h in chunk) for v in KEYS.values()]
        print(f"{chunk[0]['step']:>4}-{chunk[-1]['step']:<4}  " + "  ".join(f"{m:8.3f}" for m in means))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        xs = [h["step"] for h in steps]
        for name in ("reward", "accuracy", "format"):
            ys = [h[KEYS[name]] for h in steps]
            smooth = [statistics.fmean(ys[max(0, i - 9) : i + 1]) for i in range(len(ys))]
            ax.plot(xs, smooth, label=f"{name} (10-step mean)")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("reward")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
