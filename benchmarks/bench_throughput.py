"""Training throughput of the tiny VLM through ScaleSFTTrainer, and evaluation throughput of batched generation.

Training: one epoch of ``--train-examples`` built-in benchmark examples (SCALe loss) with ``trainer.train()``;
samples/s and tokens/s (non-padding tokens of the prepared examples) over the trainer's own ``train_runtime``.
Evaluation: greedy generation of ``--eval-examples`` test questions with ``generate_batch`` at ``--batch-size`` vs
one example at a time (batch size 1), same model, same ``--max-new-tokens``, run in alternating order.

    python benchmarks/bench_throughput.py --out benchmarks/results/throughput.json
"""

from __future__ import annotations

import math
import statistics
import time

import _common


def train_throughput(loss_impl: str, args, data) -> dict:
    # one epoch: as many steps as batches of the examples
    trainer = _common.make_trainer(loss_impl, args, data, steps=math.ceil(len(data[3]) / args.train_batch_size),
                                   batch_size=args.train_batch_size, logging_steps=1000)
    result = trainer.train()
    runtime = result.metrics["train_runtime"]
    n = len(trainer.train_dataset)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return {"loss_impl": loss_impl, "examples": n, "steps": result.global_step, "runtime_s": runtime,
            "samples_per_s": n / runtime, "tokens_per_s": tokens / runtime, "tokens": tokens}


def eval_throughput(args, model, processor) -> dict:
    from scale_vlm.eval.adapters import builtin_examples, builtin_rows
    from scale_vlm.eval.generate import generate_batch

    examples = builtin_examples(builtin_rows(split="test", num_examples=args.eval_examples, seed=0))
    model = model.to(args.device).eval()
    times = {"batched": [], "single": []}
    for rep in range(args.eval_repeats):
        order = ("batched", "single") if rep % 2 == 0 else ("single", "batched")
        for mode in order:
            t0 = time.perf_counter()
            generate_batch(model, processor, examples, max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size if mode == "batched" else 1, progress=False)
            times[mode].append(time.perf_counter() - t0)
    b, s = statistics.median(times["batched"]), statistics.median(times["single"])
    n = len(examples)
    return {"examples": n, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
            "batched_s": b, "single_s": s, "batched_examples_per_s": n / b, "single_examples_per_s": n / s,
            "speedup": s / b, "batched_s_all": times["batched"], "single_s_all": times["single"]}


def main(argv=None) -> dict:
    p = _common.trainer_parser(__doc__)
    p.add_argument("--train-examples", type=int, default=64)
    p.add_argument("--train-batch-size", type=int, default=8)
    p.add_argument("--eval-examples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size of the batched run")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--eval-repeats", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    _common.seed_torch(args)
    data = _common.tiny_model_and_data(num_examples=args.train_examples)
    # Generation first, on the freshly initialised model, so it does not depend on how training went.
    ev = eval_throughput(args, data[0], data[1])
    train_rows = [train_throughput(impl, args, data) for impl in args.loss_impls]

    print(f"\ntraining, tiny Qwen2-VL, one epoch of {args.train_examples} examples, batch {args.train_batch_size}, "
          f"device {args.device}, {torch.get_num_threads()} thread(s)")
    print(f"{'loss_impl':10s} {'samples/s':>10} {'tokens/s':>10} {'runtime s':>10}")
    for r in train_rows:
        print(f"{r['loss_impl']:10s} {r['samples_per_s']:>10.2f} {r['tokens_per_s']:>10.0f} {r['runtime_s']:>10.1f}")
    print(f"\nevaluation, {ev['examples']} examples, greedy, max_new_tokens {ev['max_new_tokens']}")
    print(f"{'mode':22s} {'examples/s':>10} {'seconds':>9}")
    print(f"{'batched (bs ' + str(ev['batch_size']) + ')':22s} {ev['batched_examples_per_s']:>10.2f} {ev['batched_s']:>9.1f}")
    print(f"{'one at a time':22s} {ev['single_examples_per_s']:>10.2f} {ev['single_s']:>9.1f}")
    print(f"speedup {ev['speedup']:.2f}x (target >= 4x)")
    report = {"benchmark": "throughput", "device": args.device, "threads": torch.get_num_threads(),
              "train": train_rows, "eval": ev, "target_eval_speedup_min": 4.0, "machine": _common.machine(args.device)}
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
