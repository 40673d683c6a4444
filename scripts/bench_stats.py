"""Statistics of the built-in benchmark with the shipped tiny tokenizer: think/answer token ratio per trace
verbosity, answer balance, teacher-error rate and the majority-answer baseline.

    python scripts/bench_stats.py [--num_examples 1000] [--seed 0] [--num_test N] [--trace_style lookup] [--scan_order cell_first]

``--num_test`` sizes the held-out split of the majority baseline (default: ``--num_examples``); the comparison's
baseline is ``--num_examples 3000 --num_test 100 --seed N``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter

from scale_vlm.bench.dataset import BenchConfig, iter_items
from scale_vlm.bench.tasks import SCAN_ORDERS, TRACE_STYLES
from scale_vlm.processors import load_processor
from scale_vlm.tiny.shipped import SHIPPED_BASE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_test", type=int, default=0)
    parser.add_argument("--trace_style", default=BenchConfig.trace_style, choices=TRACE_STYLES)
    parser.add_argument("--scan_order", default=BenchConfig.scan_order, choices=SCAN_ORDERS)
    args = parser.parse_args()
    tok = load_processor(str(SHIPPED_BASE)).tokenizer
    print(f"trace_style {args.trace_style}, scan_order {args.scan_order}\n")
    print("| trace_verbosity | think tokens (mean) | answer tokens (mean) | think/answer ratio mean [min, max] |")
    print("|---|---|---|---|")
    for v in (0, 1, 2):
        t, a, r = [], [], []
        cfg = BenchConfig(seed=args.seed, num_examples=args.num_examples, trace_verbosity=v,
                          trace_style=args.trace_style, scan_order=args.scan_order)
        for row in iter_items(cfg):
            k = row["response"].index("</think>") + len("</think>")
            t.append(len(tok(row["response"][:k])["input_ids"]))
            a.append(len(tok(row["response"][k:] + tok.eos_token)["input_ids"]))
            r.append(t[-1] / a[-1])
        print(f"| {v} | {statistics.mean(t):.1f} | {statistics.mean(a):.1f} | "
              f"{statistics.mean(r):.1f} [{min(r):.1f}, {max(r):.1f}] |")
    train = list(iter_items(BenchConfig(seed=args.seed, num_examples=args.num_examples)))
    test = list(iter_items(BenchConfig(seed=args.seed, num_examples=args.num_test or args.num_examples,
                                           split="test")))
    answers = Counter(r["answer"] for r in train)
    top, _ = answers.most_common(1)[0]
    print(f"\nanswers (train, defaults): {answers.most_common(8)}")
    print(f"option-letter share: {sum(bool(r['choices']) for r in train) / len(train):.3f}; "
          f"teacher-error share: {sum(r['teacher_error'] for r in train) / len(train):.3f}")
    print(f"categories: {dict(Counter(r['category'] for r in train))}")
    print(f"majority answer {top!r}: accuracy on test {sum(r['answer'] == top for r in test) / len(test):.3f}")


if __name__ == "__main__":
    main()
