"""Peak memory and time of the loss alone (forward + backward): plain [T, V] cross-entropy vs the fused path.

Every (implementation, T) case runs in a fresh subprocess, interleaved over repeats (plain, fused, plain, fused, ...);
times are medians over repeats. The loss is a SCALe-like weighted sum of the per-token NLL, with gradients for the
hidden states and the LM-head weight. ``plain`` and ``fused`` are the two values of ``ScaleSFTConfig.loss_impl``;
the other two are reference kernels that no config selects.

  plain: the loss_impl="plain" computation: logits = hidden @ W.T in fp32, F.cross_entropy(reduction="none")
  fused: the loss_impl="fused" computation, scale_vlm.fused_loss.weighted_token_nll (chunked, gradient computed in
         the forward)
  chunked_recompute: scale_vlm.fused_loss.chunked_token_nll (chunked, backward recomputes each tile)
  trl:   TRL's ChunkedLogProbFunction as its fused LM head calls it (log_probs, entropy, is_top1)

Memory: CPU peak resident set (VmHWM, reset before the loss) minus the resident set before the loss; CUDA
torch.cuda.max_memory_allocated minus the allocated memory before the loss.

    python benchmarks/bench_loss_memory.py --repeats 2 --out benchmarks/results/loss_memory_cpu.json
    python benchmarks/bench_loss_memory.py --device cuda --out benchmarks/results/loss_memory_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _common

IMPLS = ("plain", "fused", "chunked_recompute", "trl")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def loss_inputs(tokens: int, vocab: int, hidden: int, device: str, dtype_name: str):
    """The loss's inputs, the same in every process for the same arguments: hidden states ``h [T, H]`` and LM-head
    weight ``w [V, H]`` (both requiring grad), labels ``[T]`` with about 10 percent ignored (-100, like prompt tokens)
    and per-token segment-like weights ``coef [T]``."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=gen).to(device, dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) * 0.02).to(device, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    labels[torch.rand(tokens, generator=gen) < 0.1] = -100  # some ignored positions, like prompt tokens
    labels = labels.to(device)
    coef = (torch.rand(tokens, generator=gen) / tokens).to(device)  # per-token segment weights
    return h, w, labels, coef


def measure_once(fn, device: str, after_warmup=None) -> tuple[float, int, str]:
    """``(seconds, peak_bytes, memory_method)`` of one call of ``fn``. CUDA: after one warm-up call (then
    ``after_warmup()``, e.g. to drop its gradients), peak allocated minus allocated before the timed call. CPU: no
    warm-up; the peak resident set (VmHWM, reset just before) minus the resident set before."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        fn()  # warm-up (kernels, cuBLAS handles); on CPU one call is long enough to time alone
        if after_warmup is not None:
            after_warmup()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
        reset = _reset_peak_rss()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if cuda:
        return seconds, torch.cuda.max_memory_allocated() - base, "torch.cuda.max_memory_allocated"
    method = "VmHWM-VmRSS" if reset else "VmHWM-VmRSS (peak not reset: upper bound)"
    return seconds, _rss_kib("VmHWM") * 1024 - base, method


def run_case(impl: str, tokens: int, vocab: int, hidden: int, device: str, dtype_name: str, chunk_size: int) -> dict:
    import torch.nn.functional as F

    from scale_vlm.fused_loss import chunked_token_nll, weighted_token_nll

    h, w, labels, coef = loss_inputs(tokens, vocab, hidden, device, dtype_name)

    def plain():
        nll = F.cross_entropy((h @ w.t()).float(), labels, ignore_index=-100, reduction="none")
        (coef * nll).sum().backward()

    def fused():
        loss, _, _ = weighted_token_nll(h, w, labels, coef, chunk_size=chunk_size)
        loss.backward()

    def chunked_recompute():
        (coef * chunked_token_nll(h, w, labels, chunk_size=chunk_size)).sum().backward()

    def trl():
        from trl.kernels import ChunkedLogProbFunction

        # TRL's fused head scores only labelled positions on CUDA and clamps the rest elsewhere; same cost here.
        lp, *_ = ChunkedLogProbFunction.apply(
            h, w, None, labels.clamp(min=0), 1.0, 32768, None, 1.0, ("log_probs", "entropy", "is_top1")
        )
        (-(lp * (labels != -100)) * coef).sum().backward()

    def drop_grads():
        h.grad = w.grad = None

    fn = {"plain": plain, "fused": fused, "chunked_recompute": chunked_recompute, "trl": trl}[impl]
    seconds, peak, method = measure_once(fn, device, after_warmup=drop_grads)
    assert h.grad is not None and w.grad is not None
    return {"impl": impl, "tokens": tokens, "seconds": seconds, "peak_bytes": peak, "memory_method": method}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--vocab", type=int, default=151936, help="Qwen2.5-VL's tokenizer size")
    p.add_argument("--hidden", type=int, default=None, help="default: 256 on CPU (compute-bound here), 2048 on CUDA")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--impls", default="plain,fused", help=f"comma-separated among {','.join(IMPLS)}")
    p.add_argument("--chunk-size", type=int, default=1024, help="tokens per tile of the chunked paths")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--_case", nargs=2, metavar=("IMPL", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    hidden = args.hidden or (2048 if cuda else 256)
    dtype = args.dtype or ("bf16" if cuda else "fp32")

    if args._case:
        res = run_case(args._case[0], int(args._case[1]), args.vocab, hidden, args.device, dtype, args.chunk_size)
        print("RESULT " + json.dumps(res))
        return res

    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    for i in impls:
        if i not in IMPLS:
            p.error(f"unknown impl {i!r}; choose among {', '.join(IMPLS)}")
    runs: dict[tuple[str, int], list[dict]] = {}
    for tokens in args.tokens:
        for rep in range(args.repeats):
            for impl in impls:
                cmd = [sys.executable, os.path.abspath(__file__), "--_case", impl, str(tokens), "--device", args.device,
                       "--vocab", str(args.vocab), "--hidden", str(hidden), "--dtype", dtype,
                       "--chunk-size", str(args.chunk_size)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.stderr.write(out.stderr)
                    raise SystemExit(f"case {impl} T={tokens} failed")
                res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
                runs.setdefault((impl, tokens), []).append(res)
                print(f"  T={tokens} {impl:17s} rep {rep}: {res['seconds']:.2f} s, "
                      f"peak {res['peak_bytes'] / 2**30:.2f} GiB", flush=True)

    rows = []
    for tokens in args.tokens:
        ref = runs.get(("plain", tokens))
        ref_s = statistics.median(r["seconds"] for r in ref) if ref else None
        ref_m = statistics.median(r["peak_bytes"] for r in ref) if ref else None
        for impl in impls:
            rs = runs[(impl, tokens)]
            s = statistics.median(r["seconds"] for r in rs)
            m = statistics.median(r["peak_bytes"] for r in rs)
            rows.append({
                "impl": impl, "tokens": tokens, "seconds_median": s, "seconds_all": [r["seconds"] for r in rs],
                "peak_gib": m / 2**30, "time_vs_plain": s / ref_s if ref_s else None,
                "peak_vs_plain": m / ref_m if ref_m else None, "memory_method": rs[0]["memory_method"],
            })
    print(f"\nloss forward+backward, vocab {args.vocab}, hidden {hidden}, {dtype}, device {args.device}, "
          f"median of {args.repeats}")
    print(f"{'T':>6} {'impl':17s} {'time s':>9} {'peak GiB':>9} {'time/plain':>11} {'peak/plain':>11}")
    for r in rows:
        tv = f"{r['time_vs_plain']:.3f}" if r["time_vs_plain"] is not None else "-"
        pv = f"{r['peak_vs_plain']:.3f}" if r["peak_vs_plain"] is not None else "-"
        print(f"{r['tokens']:>6} {r['impl']:17s} {r['seconds_median']:>9.2f} {r['peak_gib']:>9.3f} {tv:>11} {pv:>11}")
    report = {
        "benchmark": "loss_memory", "device": args.device, "vocab": args.vocab, "hidden": hidden, "dtype": dtype,
        "chunk_size": args.chunk_size, "repeats": args.repeats, "rows": rows, "machine": _common.machine(args.device),
        "targets": {"tokens": 8192, "peak_vs_plain_max": 0.35, "time_vs_plain_max": 1.1},
    }
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
