"""What makes the demo's training steps cheaper: each lever against the demo's old recipe, in one run.

The demo's data (the built-in benchmark in the demo's default regime), model (the shipped tiny Qwen2-VL), batch (16), recipe
(``scale_vlm.drivers.sft_args``) and method (SCALe); every lever trains the same examples in the same order from the
same initial weights for ``--steps`` optimizer steps. Step cost is the median process CPU time of a step after
``--warmup`` steps, with one torch thread (the demo trains each method on one core): CPU time is barely affected by
other processes on a shared machine, wall time is reported too. The losses of every step are recorded; a lever that
changes the computation (not only its cost) shows up as a loss difference against the baseline.

Levers: ``padded`` (the old recipe: right-padded batches, ``loss_impl="fused"``), ``plain`` (full logits and
cross-entropy: with a 546-token vocabulary there is nothing for the chunked head to save), ``packed``
(``padding_free=True``: several examples per row, scale_vlm.packing), ``packed_plain`` (both), ``grouped`` (batches
of similar lengths, ``train_sampling_strategy="group_by_length"``: other batches, so other losses), ``bf16`` (bf16 autocast on the CPU),
``grouped_bf16`` (both), and with ``--compile``
``packed_plain_compiled`` (``torch.compile`` of each decoder layer; its compile seconds are reported apart).
``--bf16`` adds a matrix-multiply probe at the model's largest layer shape (fp32 vs bf16 on this CPU).

    python benchmarks/bench_demo_levers.py --out benchmarks/results/demo_levers_cpu.json
    python benchmarks/bench_demo_levers.py --trace_verbosity 1 --trace_repeat 0 --trace_entropy 0 --out \
        benchmarks/results/demo_levers_cpu_templated.json   # the templated regime, the demo's default before
"""

from __future__ import annotations

import statistics
import time

import _common

LEVERS = {
    "padded": {"padding_free": False, "loss_impl": "fused"},
    "plain": {"padding_free": False, "loss_impl": "plain"},
    "packed": {"padding_free": True, "loss_impl": "fused"},
    "packed_plain": {"padding_free": True, "loss_impl": "plain"},
    # batches of similar lengths (transformers' LengthGroupedSampler): less padding, but other batches than the
    # demo's, so its losses are not the baseline's
    "grouped": {"padding_free": False, "loss_impl": "fused", "train_sampling_strategy": "group_by_length"},
    # bf16 autocast on the CPU: fast where the CPU multiplies bf16 natively (AVX512-BF16, AMX), slow where it
    # emulates it (see --bf16's matrix-multiply probe); other arithmetic, so other losses
    "bf16": {"padding_free": False, "loss_impl": "fused", "bf16": True},
    "grouped_bf16": {"padding_free": False, "loss_impl": "fused", "train_sampling_strategy": "group_by_length",
                     "bf16": True},
}


def run_lever(name: str, settings: dict, rows, args, compile_layers: bool = False) -> dict:
    import torch
    from transformers import TrainerCallback

    from scale_vlm.drivers import build_sft_trainer, sft_args
    from scale_vlm.tiny.shipped import SHIPPED_BASE, load_base

    torch.manual_seed(0)
    model, processor = load_base(SHIPPED_BASE)
    compile_seconds = None
    if compile_layers:
        for layer in model.model.language_model.layers:
            layer.compile(dynamic=True)
    cfg = sft_args(f"{args.tmp}/{name}", "scale", {}, steps=args.steps, batch_size=args.batch_size,
                   learning_rate=2e-3, seed=0, progress=False, **settings)
    trainer = build_sft_trainer(model, processor, cfg, rows)
    steps: list[tuple[float, float]] = []
    batch_tokens = []  # the positions each step computes, padding included: what padding costs
    counted = trainer.get_batch_samples

    def count_positions(*a, **k):
        batches, n = counted(*a, **k)
        batch_tokens.extend(int(b["input_ids"].numel()) for b in batches)
        return batches, n

    trainer.get_batch_samples = count_positions

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            steps.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

    trainer.add_callback(StepTimer())
    trainer.train()
    if compile_layers:
        compile_seconds = steps[0][0]  # the first step compiles (later shapes may recompile: dynamic=True)
    timed = steps[args.warmup:]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return {
        "settings": {**settings, "compiled_layers": compile_layers},
        "cpu_s_per_step": statistics.median(c for _, c in timed),
        "wall_s_per_step": statistics.median(w for w, _ in timed),
        "input_tokens": trainer.input_tokens, "computed_positions": sum(batch_tokens),
        "padding_fraction": 1 - trainer.input_tokens / sum(batch_tokens), "compile_seconds": compile_seconds,
        "losses": losses,
    }


def bf16_probe(tokens: int, hidden: int, ffn: int, repeats: int = 20) -> dict:
    """CPU time of one [tokens, hidden] x [hidden, ffn] product in fp32 and bf16 (the model's MLP shape)."""
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = torch.randn(tokens, hidden, dtype=dtype), torch.randn(ffn, hidden, dtype=dtype)
        torch.nn.functional.linear(x, w)
        c0 = time.process_time()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        out[str(dtype).replace("torch.", "")] = (time.process_time() - c0) / repeats
    out["bf16_over_fp32_time"] = out["bfloat16"] / out["float32"]
    return out


def main() -> None:
    import tempfile

    p = _common.trainer_parser(__doc__)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_examples", type=int, default=400)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the decoder layers")
    p.add_argument("--bf16", action="store_true", help="also probe bf16 matrix multiplies on this CPU")
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS),
                   help="levers to time (padded, the baseline, is always timed)")
    # the benchmark's length and wording knobs (docs/regimes.md), the demo's by default
    from scale_vlm.demo import DEMO_REGIME

    for name, value in DEMO_REGIME.items():
        p.add_argument(f"--{name}", type=int, default=value)
    args = p.parse_args()
    _common.seed_torch(args)
    from scale_vlm.bench.dataset import BenchConfig, make_benchmark, to_training_format
    from scale_vlm.drivers import prepare_sft_rows
    from scale_vlm.tiny.shipped import SHIPPED_BASE

    knobs = {k: getattr(args, k) for k in DEMO_REGIME}
    rows = prepare_sft_rows(
        to_training_format(make_benchmark(BenchConfig(num_examples=args.num_examples, **knobs))), SHIPPED_BASE)
    report = {"benchmark": "demo_levers", "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
              "bench_knobs": knobs, "levers": {}}
    levers = [(name, s, False) for name, s in LEVERS.items() if name == "padded" or name in args.levers]
    if args.compile:
        levers.append(("packed_plain_compiled", LEVERS["packed_plain"], True))
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        for name, settings, compiled in levers:
            report["levers"][name] = run_lever(name, settings, rows, args, compiled)
            print(name, {k: v for k, v in report["levers"][name].items() if k != "losses"}, flush=True)
    base = report["levers"]["padded"]
    for r in report["levers"].values():
        r["speedup_cpu"] = base["cpu_s_per_step"] / r["cpu_s_per_step"]
        r["speedup_wall"] = base["wall_s_per_step"] / r["wall_s_per_step"]
        r["max_abs_loss_diff_vs_padded"] = max(abs(a - b) for a, b in zip(r["losses"], base["losses"]))
    if args.bf16:
        report["bf16_probe"] = bf16_probe(tokens=16 * 190, hidden=128, ffn=512)
    report["machine"] = _common.machine(args.device)
    print("\n| lever | CPU s / step | speed-up (CPU time) | speed-up (wall) | padding | max loss diff vs padded |")
    print("|---|---|---|---|---|---|")
    for name, r in report["levers"].items():
        print(f"| {name} | {r['cpu_s_per_step']:.3f} | {r['speedup_cpu']:.2f}x | {r['speedup_wall']:.2f}x | "
              f"{r['padding_fraction']:.1%} | {r['max_abs_loss_diff_vs_padded']:.1e} |")
    if args.bf16:
        print(f"bf16 / fp32 matmul time: {report['bf16_probe']['bf16_over_fp32_time']:.1f}x")
    _common.write_json(args.out, report)


if __name__ == "__main__":
    main()
