"""Step-time ratio SCALe / vanilla on the same tiny VLM, data and batch, measured in one process.

One trainer, one fixed batch; each repeat times one optimizer step (compute_loss + backward + AdamW step) with
``method="scale"`` and one with ``method="vanilla"``, in alternating order; the ratio is the median SCALe step
time over the median vanilla step time (the median of the per-repeat ratios is reported too). On CPU both wall time
and process CPU time are recorded; with one intra-op thread (``--threads 1``, the CPU default) CPU time is barely
affected by other processes on a shared machine, so the CPU-time ratio is the headline figure there.

    python benchmarks/bench_step_time.py --out benchmarks/results/step_time.json
"""

from __future__ import annotations

import statistics
import time

import _common


def measure(loss_impl: str, args, model_and_data) -> dict:
    import torch

    trainer = _common.make_trainer(loss_impl, args, model_and_data, steps=10, batch_size=args.batch_size)
    trainer.create_optimizer()
    opt = trainer.optimizer
    model = trainer.model.to(args.device)
    model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
    batch = {k: v.to(args.device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def step(method: str) -> tuple[float, float]:
        trainer.args.method = method
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    for _ in range(args.warmup):
        step("scale"), step("vanilla")
    times = {"scale": [], "vanilla": []}
    for rep in range(args.repeats):
        order = ("scale", "vanilla") if rep % 2 == 0 else ("vanilla", "scale")
        for m in order:
            times[m].append(step(m))
    row = {"loss_impl": loss_impl, "tokens_per_batch": int(batch["attention_mask"].sum()),
           "batch_shape": list(batch["input_ids"].shape)}
    for k, clock in enumerate(("wall", "cpu")):
        sc, va = [t[k] for t in times["scale"]], [t[k] for t in times["vanilla"]]
        s, v = statistics.median(sc), statistics.median(va)
        row[clock] = {"scale_ms": 1e3 * s, "vanilla_ms": 1e3 * v, "ratio": s / v,
                      "median_pairwise_ratio": statistics.median(a / b for a, b in zip(sc, va)),
                      "scale_ms_all": [round(1e3 * x, 2) for x in sc], "vanilla_ms_all": [round(1e3 * x, 2) for x in va]}
    return row


def main(argv=None) -> dict:
    p = _common.trainer_parser(__doc__)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    _common.seed_torch(args)
    data = _common.tiny_model_and_data(num_examples=max(16, args.batch_size))
    n_params = sum(p.numel() for p in data[0].parameters())
    rows = [measure(impl, args, data) for impl in args.loss_impls]
    print(f"\nstep time (compute_loss + backward + AdamW step), tiny Qwen2-VL ({n_params / 1e6:.2f}M params), "
          f"batch {rows[0]['batch_shape']}, device {args.device}, median of {args.repeats} interleaved repeats")
    print(f"{'loss_impl':10s} {'clock':5s} {'SCALe ms':>9} {'vanilla ms':>11} {'ratio':>7} {'pairwise':>9}")
    for r in rows:
        for clock in ("wall", "cpu"):
            c = r[clock]
            print(f"{r['loss_impl']:10s} {clock:5s} {c['scale_ms']:>9.2f} {c['vanilla_ms']:>11.2f} {c['ratio']:>7.3f} "
                  f"{c['median_pairwise_ratio']:>9.3f}")
    report = {"benchmark": "step_time", "device": args.device, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(),
              "repeats": args.repeats, "model_params": n_params, "rows": rows, "target_ratio_max": 1.02,
              "machine": _common.machine(args.device)}
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
