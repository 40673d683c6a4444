"""Summarise a GRPO run's logged reward curve (``scale-vlm grpo`` writes ``log_history.json``; a GRPO stage of
``scale-vlm compare``, ``OUTPUT_DIR/seedS/grpo_METHOD``, keeps it in ``stage.json``).

    python scripts/grpo_reward_curve.py runs/grpo-scale [--window 20] [--png docs/grpo_reward_curve.png]
    python scripts/grpo_reward_curve.py runs/grpo-search/seed0/seed0/grpo_vanilla --window 100

Prints mean reward, accuracy reward, format reward and completion length over consecutive windows of steps, then
the greedy probe's rows when the run had one (``--probe_every``: greedy accuracy on fixed questions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scale_vlm.report import (
    GRPO_LOG_KEYS,
    plot_reward_curve,
    probe_curve,
    reward_curve,
    window_means,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--png", default=None)
    args = p.parse_args()
    run = Path(args.run_dir)
    if (run / "log_history.json").is_file():
        log = json.loads((run / "log_history.json").read_text())
    else:  # a GRPO stage of scale-vlm compare (seedS/grpo_METHOD): the trainer log is in its stage record
        log = json.loads((run / "stage.json").read_text())["results"]["log_history"]
    curve = reward_curve(log)
    keys = [k for k in GRPO_LOG_KEYS if all(k in row for row in curve)]  # older TRL logs fewer of them
    columns = {key: window_means(curve, args.window, key) for key in keys}
    print(f"{'steps':>9}  " + "  ".join(f"{k:>21}" for k in keys))
    for i, window in enumerate(columns["reward"]):
        print(f"{window['first_step']:>4}-{window['last_step']:<4}  "
              + "  ".join(f"{columns[k][i]['mean']:21.3f}" for k in keys))
    probe = probe_curve(log)
    if probe:
        print("\ngreedy probe (the scored answer):\n step  accuracy  malformed")
        for row in probe:
            print(f"{row['step']:>5}  {row['accuracy']:8.3f}  {row['malformed_rate']:9.3f}")
    if args.png:
        plot_reward_curve(curve, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
