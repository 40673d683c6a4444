"""Padding-free (packed) vs padded SFT throughput on long-tailed reasoning lengths, in one process.

The shipped tiny Qwen2-VL (``scale_vlm.tiny.shipped``) trains ``--steps`` optimizer steps twice on the same examples
in the same order (same seed, same sampler): once padded (``padding_free=False``), once packed
(``padding_free=True``, rows filled first-fit-decreasing up to the longest example of the micro-batch). Real
distilled traces have long-tailed think lengths: a few traces are 10-50x the median, so a padded micro-batch is
mostly padding. Here each example's think length in tokens is drawn from a log-normal distribution (median
``--median-think`` tokens, sigma ``--sigma``, clipped to [20, ``--max-think``]); the think text is the built-in
benchmark's own reasoning for that example, its sentences repeated until the drawn length is reached (the answer
is the benchmark's). Reported: real (non-padding) tokens per second of each run, their ratio packed/padded, the
fraction of the batch tensors that is padding, and the loss of every step of both runs, which must agree up to
float noise (so the speed-up cannot come from computing less).

    python benchmarks/bench_packing.py --out benchmarks/results/packing_cpu.json
"""

from __future__ import annotations

import math
import random
import re
import time

import _common


def long_tail_dataset(processor, num_examples: int, median: int, sigma: float, max_think: int, seed: int):
    """The benchmark's examples in TRL's messages format with log-normal think lengths (tokens)."""
    from datasets import Dataset

    from scale_vlm.bench import BenchConfig, make_benchmark
    from scale_vlm.bench.dataset import training_messages

    raw = make_benchmark(BenchConfig(seed=seed, num_examples=num_examples, split="train"))
    tok = processor.tokenizer
    rng = random.Random(seed)
    rows, think_tokens = [], []
    for ex in raw:
        think, answer = re.match(r"<think>(.*)</think>(.*)", ex["response"], re.S).groups()
        sentences = [s.strip() + "." for s in think.split(".") if s.strip()] or [think]
        target = int(min(max_think, max(20, rng.lognormvariate(math.log(median), sigma))))
        text, k, n = [], 0, 0
        while n < target:  # whole sentences of the example's own reasoning, repeated, up to the drawn length
            text.append(sentences[k % len(sentences)])
            k += 1
            n = len(tok(" ".join(text), add_special_tokens=False)["input_ids"])
        think_tokens.append(n)
        rows.append({"messages": training_messages(ex["prompt"], f"<think>{' '.join(text)}</think>{answer}"),
                     "images": [ex["image"]]})
    return Dataset.from_list(rows), think_tokens


class _Counting:
    """Wraps the collator: real tokens and batch-tensor cells (rows x length) of every micro-batch."""

    def __init__(self, collator):
        self.collator, self.real, self.cells = collator, 0, 0

    def __call__(self, rows):
        batch = self.collator(rows)
        self.real += sum(len(r["input_ids"]) for r in rows)
        self.cells += batch["input_ids"].numel()
        return batch


def run(padding_free: bool, args, data) -> dict:
    import tempfile

    import torch

    from scale_vlm.drivers import build_sft_trainer
    from scale_vlm.tiny.shipped import load_base

    torch.manual_seed(0)
    model, processor = load_base()
    with tempfile.TemporaryDirectory() as tmp:
        # a loss logged every step: the two runs' losses are compared step by step
        cfg = _common.sft_config(tmp, args.loss_impl, args, steps=args.steps, batch_size=args.batch_size,
                                 learning_rate=1e-3, max_length=4096, logging_steps=1, padding_free=padding_free,
                                 packing_row_tokens=args.row_tokens if padding_free else None)
        trainer = build_sft_trainer(model, processor, cfg, data)
        trainer.data_collator = counting = _Counting(trainer.data_collator)
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return {"padding_free": padding_free, "wall_s": wall, "cpu_s": cpu, "real_tokens": counting.real,
            "batch_cells": counting.cells, "padding_fraction": 1 - counting.real / counting.cells,
            "tokens_per_s_wall": counting.real / wall, "tokens_per_s_cpu": counting.real / cpu, "losses": losses}


def main(argv=None) -> dict:
    p = _common.trainer_parser(__doc__)
    p.set_defaults(loss_impls=["fused"])
    p.add_argument("--loss-impl", default="fused", help="ScaleSFTConfig.loss_impl of both runs")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--median-think", type=int, default=120, help="median think length (tokens)")
    p.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of the think length")
    p.add_argument("--max-think", type=int, default=1500)
    p.add_argument("--row-tokens", type=int, default=None, help="packing_row_tokens (default: longest example)")
    args = p.parse_args(argv)
    import torch

    from scale_vlm.tiny.shipped import load_base

    _common.seed_torch(args)
    _, processor = load_base()
    data, think = long_tail_dataset(processor, args.steps * args.batch_size, args.median_think, args.sigma,
                                    args.max_think, seed=0)
    padded, packed = run(False, args, data), run(True, args, data)
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(padded["losses"], packed["losses"]))
    ratio_wall = packed["tokens_per_s_wall"] / padded["tokens_per_s_wall"]
    ratio_cpu = packed["tokens_per_s_cpu"] / padded["tokens_per_s_cpu"]
    think_sorted = sorted(think)
    print(f"\nthink tokens: median {think_sorted[len(think) // 2]}, p90 {think_sorted[int(0.9 * len(think))]}, "
          f"max {think_sorted[-1]} ({len(think)} examples, batch {args.batch_size}, {args.steps} steps)")
    for r in (padded, packed):
        print(f"{'packed' if r['padding_free'] else 'padded':7s} {r['tokens_per_s_wall']:>9.0f} tok/s wall "
              f"{r['tokens_per_s_cpu']:>9.0f} tok/s cpu  padding {100 * r['padding_fraction']:5.1f}%  "
              f"losses {[round(x, 4) for x in r['losses']]}")
    print(f"packed/padded tokens per second: wall {ratio_wall:.2f}x, cpu {ratio_cpu:.2f}x; "
          f"largest relative loss difference {worst:.2e}")
    assert len(padded["losses"]) == len(packed["losses"]) == args.steps and worst < 1e-4, "losses differ"
    report = {"benchmark": "packing", "device": args.device, "threads": torch.get_num_threads(),
              "loss_impl": args.loss_impl, "steps": args.steps, "batch_size": args.batch_size,
              "think_length": {"distribution": "log-normal", "median": args.median_think, "sigma": args.sigma,
                               "clip": [20, args.max_think], "drawn_median": think_sorted[len(think) // 2],
                               "drawn_max": think_sorted[-1]},
              "row_tokens": args.row_tokens or "longest example of the micro-batch",
              "padded": padded, "packed": packed, "ratio_tokens_per_s_wall": ratio_wall,
              "ratio_tokens_per_s_cpu": ratio_cpu, "max_relative_loss_difference": worst, "target_ratio_min": 1.5,
              "machine": _common.machine(args.device)}
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
