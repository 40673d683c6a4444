"""Summarise a GRPO run's logged reward curve (``scale-vlm grpo`` writes ``log_history.json``).

    python scripts/grpo_reward_curve.py runs/grpo-scale [--window 20] [--png docs/grpo_reward_curve.png]

Prints mean reward, accuracy reward, format reward and completion length over consecutive windows of steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scale_vlm.report import (
    GRPO_LOG_KEYS,
    plot_reward_curve,
    reward_curve,
    window_means,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--png", default=None)
    args = p.parse_args()
    curve = reward_curve(json.loads((Path(args.run_dir) / "log_history.json").read_text()))
    columns = {key: window_means(curve, args.window, key) for key in GRPO_LOG_KEYS}
    print(f"{'steps':>9}  " + "  ".join(f"{k:>17}" for k in GRPO_LOG_KEYS))
    for i, window in enumerate(columns["reward"]):
        print(f"{window['first_step']:>4}-{window['last_step']:<4}  "
              + "  ".join(f"{columns[k][i]['mean']:17.3f}" for k in GRPO_LOG_KEYS))
    if args.png:
        plot_reward_curve(curve, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
