"""ScaleSFTTrainer side by side with stock TRL ``SFTTrainer``: training throughput, peak memory and losses on the same
tiny VLM and data, and the fused loss head against TRL's own chunked LM head at vocab 151,936.

Part 1, training. The shipped tiny Qwen2-VL (``load_base``), the built-in benchmark (``to_training_format``: TRL
``messages`` + ``images`` rows), the same steps, batch, seed, data order and optimizer recipe (``drivers.sft_args``),
each arm in a fresh subprocess:

  trl             stock ``SFTTrainer`` on the ``messages`` rows, as TRL documents it for a VLM: it sees the ``images``
                  column, skips dataset preparation and collates on the fly with its
                  ``DataCollatorForVisionLanguageModeling``. Language-modeling rows: the loss covers every non-padding
                  token (prompt and image tokens too), as TRL does by default.
  trl_completion  stock ``SFTTrainer`` on the same rows split into conversational ``prompt`` / ``completion``
                  (user turn / assistant turn): TRL's default ``completion_only_loss`` masks the prompt, so it
                  supervises the assistant turn, like ScaleSFTTrainer (plus the newline after ``<|im_end|>``).
  vanilla, scale  ``ScaleSFTTrainer`` (``build_sft_trainer``) with ``method="vanilla"`` / ``"scale"``.

Only two settings are passed to TRL beyond the shared recipe, and both make it *match* ours: ``bf16`` (TRL's default is
on, also on CPU) and ``activation_checkpointing`` (on by default in TRL) take the recipe's values (off on CPU). TRL
needs no ``max_length=None``, ``remove_unused_columns=False`` or ``dataset_kwargs`` for vision rows.

Throughput counts the same tokens in every arm: non-padding input tokens (``attention_mask``) of each optimizer step,
over the steps after ``--warmup``, divided by the time between the end of step ``--warmup`` and the end of the last
step (data loading and collation included: no dataloader workers), both wall time and process CPU time. With one torch
thread (the default) CPU time hardly depends on what else runs on a shared machine, so on CPU the goal is judged on
tokens per CPU-second; on CUDA on wall time. The supervised tokens (``labels[:, 1:] != -100``) are counted too.
ScaleSFTTrainer renders its dataset in the constructor, TRL collates in the loop: ``setup_s`` (trainer construction)
and the end-to-end rate (tokens / (setup + train())) show that cost where it falls.

Memory: CPU, the resident-set high-water mark (VmHWM, the counter ``getrusage(RUSAGE_SELF).ru_maxrss`` reads) of the
arm's process: ``process_peak`` over the whole run (imports, model, data, training: nothing subtracted) and
``train_peak_delta``, VmHWM during ``train()`` (reset through ``/proc/self/clear_refs`` just before) minus the
resident set before it. tracemalloc would miss torch's allocations. CUDA: ``torch.cuda.max_memory_allocated``.

A first-batch check (own subprocess) feeds the first ``--batch-size`` examples, collated by each trainer, to fresh
copies of the model: the input ids must be identical, and TRL's per-token NLL averaged over *our* supervised tokens
must equal our vanilla loss.

Part 2, the loss head alone (forward + backward), vocab 151,936, the same hidden states and targets
(``bench_loss_memory.loss_inputs``), token-mean NLL (the SFT loss of both trainers), one fresh subprocess per case,
memory measured by ``bench_loss_memory.measure_once``:

  plain  full fp32 logits + ``F.cross_entropy``
  fused  ``scale_vlm.fused_loss.weighted_token_nll`` (the ``loss_impl="fused"`` head of ScaleSFTTrainer)
  trl    ``trl.kernels.ChunkedLogProbFunction`` called as TRL 1.16's ``add_fused_lm_head`` (trl/trainer/utils.py)
         calls it for SFTTrainer: vocab chunk ``_CHUNKED_LOGPROB_CHUNK_SIZE`` (32768), outputs log_probs, entropy,
         is_top1; only labelled positions on CUDA (Triton), every position with clamped labels elsewhere.

    python benchmarks/bench_vs_trl.py --out benchmarks/results/vs_trl_cpu.json
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

ARMS = ("trl", "trl_completion", "vanilla", "scale")
OURS, THEIRS = ("vanilla", "scale"), ("trl", "trl_completion")
LOSS_IMPLS = ("plain", "fused", "trl")
TRL_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what SFTTrainer asks its fused head for


# ---------------------------------------------------------------------------------------------- counting helpers

def batch_token_counts(batch) -> tuple[int, int]:
    """``(input, supervised)`` tokens of a collated batch: non-padding positions (``attention_mask``) and next-token
    targets that are not ignored (``labels[:, 1:] != -100``, what both trainers' losses average over)."""
    labels = batch.get("labels")
    supervised = int((labels[:, 1:] != -100).sum()) if labels is not None else 0
    return int(batch["attention_mask"].sum()), supervised


def steady_rate(step_tokens: list[int], step_ends: list[float], warmup: int) -> float | None:
    """Tokens per second over the steps after the first ``warmup``: tokens of steps ``warmup+1..n`` over the time
    from the end of step ``warmup`` to the end of step ``n``. ``None`` if fewer than one step is left to time."""
    if len(step_tokens) != len(step_ends):
        raise ValueError(f"{len(step_tokens)} token counts for {len(step_ends)} steps")
    if warmup < 1 or len(step_ends) <= warmup:
        return None
    seconds = step_ends[-1] - step_ends[warmup - 1]
    return sum(step_tokens[warmup:]) / seconds if seconds > 0 else None


def first_last_loss(log_history: list[dict]) -> tuple[float | None, float | None, list[float]]:
    """First and last logged training loss and all of them (the step logs, not the end-of-training summary)."""
    losses = [row["loss"] for row in log_history if "loss" in row and "train_loss" not in row]
    return (losses[0] if losses else None), (losses[-1] if losses else None), losses


def to_prompt_completion(row: dict) -> dict:
    """A ``messages`` row as TRL's conversational prompt-completion: every turn before the last / the last turn."""
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}


# ------------------------------------------------------------------------------------------------ part 1: training

def _rows(arm: str, num_examples: int):
    from scale_vlm.bench import BenchConfig, make_benchmark, to_training_format

    rows = to_training_format(make_benchmark(BenchConfig(seed=0, num_examples=num_examples, split="train")))
    if arm == "trl_completion":
        rows = rows.map(to_prompt_completion, remove_columns=["messages"])
    return rows


# The recipe fields that decide the optimizer, the schedule, the data order and the numerics: TRL gets ours.
RECIPE_FIELDS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                 "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                 "max_grad_norm", "optim", "seed", "data_seed", "max_length", "bf16", "activation_checkpointing",
                 "logging_steps", "save_strategy", "report_to", "disable_tqdm", "dataloader_num_workers",
                 "dataloader_pin_memory", "use_cpu")


def _configs(arm: str, args, output_dir: str):
    """``(ScaleSFTConfig of drivers.sft_args, config of the arm)``: the TRL arms get a plain ``SFTConfig`` holding
    the recipe's ``RECIPE_FIELDS`` and TRL's defaults for everything else."""
    from trl import SFTConfig

    from scale_vlm.drivers import sft_args

    method = arm if arm in OURS else "vanilla"
    ours = sft_args(output_dir, method, {}, steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, seed=0, progress=False)
    if arm in OURS:
        return ours, ours
    return ours, SFTConfig(output_dir=output_dir, **{name: getattr(ours, name) for name in RECIPE_FIELDS})


def _trainer_classes():
    """Stock ``SFTTrainer`` and our ``CountingSFTTrainer``, each with the same per-step token counter."""
    from trl import SFTTrainer

    from scale_vlm.drivers import CountingSFTTrainer

    def counted(base):
        class Counted(base):
            def get_batch_samples(self, epoch_iterator, num_batches, device):
                batch_samples, n = super().get_batch_samples(epoch_iterator, num_batches, device)
                counts = [batch_token_counts(b) for b in batch_samples]
                self.step_counts.append((sum(c[0] for c in counts), sum(c[1] for c in counts)))
                return batch_samples, n

        Counted.__name__ = f"Counted{base.__name__}"
        return Counted

    return counted(SFTTrainer), counted(CountingSFTTrainer)


def _step_clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall time and process CPU time at the end of every optimizer step."""

        def __init__(self):
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    return StepClock()


def run_arm(arm: str, args) -> dict:
    import tempfile

    import torch
    from bench_loss_memory import _reset_peak_rss, _rss_kib

    from scale_vlm.tiny.shipped import load_base

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    rows = _rows(arm, args.steps * args.batch_size)
    model, processor = load_base()
    trl_cls, ours_cls = _trainer_classes()
    clock = _step_clock()
    with tempfile.TemporaryDirectory() as tmp:
        _, cfg = _configs(arm, args, tmp)
        t0 = time.perf_counter()
        cls = ours_cls if arm in OURS else trl_cls
        trainer = cls(model=model, args=cfg, train_dataset=rows, processing_class=processor, callbacks=[clock])
        setup_s = time.perf_counter() - t0
        trainer.step_counts = []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        pre_peak, base = _rss_kib("VmHWM") * 1024, _rss_kib("VmRSS") * 1024
        reset = _reset_peak_rss()
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        train_peak = _rss_kib("VmHWM") * 1024
    inputs = [c[0] for c in trainer.step_counts]
    supervised = [c[1] for c in trainer.step_counts]
    first, last, losses = first_last_loss(trainer.state.log_history)
    collator = type(trainer.data_collator).__name__
    res = {
        "arm": arm, "trainer": type(trainer).__mro__[1].__name__, "collator": collator,
        "completion_only_loss": getattr(trainer, "completion_only_loss", None),
        "assistant_only_loss": cfg.assistant_only_loss, "bf16": cfg.bf16,
        "activation_checkpointing": cfg.activation_checkpointing,
        "steps": len(inputs), "input_tokens": sum(inputs), "supervised_tokens": sum(supervised),
        "input_tokens_per_step": inputs, "supervised_tokens_per_step": supervised,
        "setup_s": setup_s, "train_s": train_s,
        "tokens_per_s_steady": steady_rate(inputs, clock.ends, args.warmup),
        "tokens_per_cpu_s_steady": steady_rate(inputs, clock.cpu_ends, args.warmup),
        "tokens_per_s_train": sum(inputs) / train_s,
        "tokens_per_s_end_to_end": sum(inputs) / (setup_s + train_s),
        "process_peak_bytes": max(pre_peak, train_peak), "train_peak_delta_bytes": train_peak - base,
        "memory_method": "VmHWM" if reset else "VmHWM (peak not reset: delta is an upper bound)",
        "loss_first": first, "loss_last": last, "losses": losses, "torch_threads": torch.get_num_threads(),
    }
    if cuda:
        res["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return res


def first_batch_check(args) -> dict:
    """Each trainer's own collation of the same first examples and its loss on them, from identical weights."""
    import tempfile

    import torch

    from scale_vlm.tiny.shipped import load_base

    torch.set_num_threads(args.threads)
    trl_cls, ours_cls = _trainer_classes()
    n = args.batch_size
    out: dict = {"examples": n}
    batches, trainers = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in ("trl", "trl_completion", "vanilla"):
            model, processor = load_base()
            rows = _rows(arm, args.steps * args.batch_size)
            cls = ours_cls if arm in OURS else trl_cls
            trainer = cls(model=model, args=_configs(arm, args, os.path.join(tmp, arm))[1], train_dataset=rows,
                          processing_class=processor)
            batch = trainer.data_collator([dict(trainer.train_dataset[i]) for i in range(n)])
            batches[arm], trainers[arm] = batch, trainer
            trainer.model.train()
            with torch.no_grad():
                loss = trainer.compute_loss(trainer.model, dict(batch))
            inputs, supervised = batch_token_counts(batch)
            out[arm] = {"loss": float(loss), "input_tokens": inputs, "supervised_tokens": supervised,
                        "shape": list(batch["input_ids"].shape)}
        ours, trl_c = batches["vanilla"], batches["trl_completion"]
        tokenizer = trainers["vanilla"].processing_class.tokenizer
        same_ids = all(torch.equal(ours["input_ids"], batches[a]["input_ids"]) for a in THEIRS)
        out["same_input_ids"] = same_ids
        out["same_pixel_values"] = all(torch.equal(ours["pixel_values"], batches[a]["pixel_values"]) for a in THEIRS)
        our_mask = ours["labels"][:, 1:] != -100
        for arm in THEIRS:
            mask = batches[arm]["labels"][:, 1:] != -100
            if mask.shape != our_mask.shape:
                out[arm]["comparable"] = False
                continue
            targets = ours["input_ids"][:, 1:]
            extra = sorted({tokenizer.decode([int(t)]) for t in targets[mask & ~our_mask].tolist()})
            out[arm].update({"supervised_not_by_ours": int((mask & ~our_mask).sum()),
                             "supervised_only_by_ours": int((our_mask & ~mask).sum()),
                             "extra_tokens_decoded": extra[:10]})
        if same_ids:
            # TRL's own per-token NLL (its fused head, on its own collated batch) scored at the targets ours
            # supervises: must be our vanilla loss.
            trainer = trainers["trl_completion"]
            with torch.no_grad():
                fused = trainer.model(**{**trl_c, "labels": ours["labels"]}, use_cache=False, fused_lm_head=True)
            nll = -(fused.log_probs * our_mask).sum() / our_mask.sum()
            out["trl_nll_on_our_tokens"] = float(nll)
            out["abs_diff_vs_our_vanilla"] = abs(float(nll) - out["vanilla"]["loss"])
    return out


# --------------------------------------------------------------------------------------------- part 2: loss head

def run_loss_case(impl: str, args) -> dict:
    import torch
    import torch.nn.functional as F
    from bench_loss_memory import loss_inputs, measure_once

    from scale_vlm.fused_loss import weighted_token_nll

    h, w, labels, _ = loss_inputs(args.loss_tokens, args.vocab, args.hidden, args.device, args.dtype)
    mask = labels != -100
    n = mask.sum()
    result = {}

    def plain():
        loss = F.cross_entropy((h @ w.t()).float(), labels, ignore_index=-100)  # token mean over labelled positions
        loss.backward()
        result["loss"] = loss

    def fused():
        coef = mask.float() / n  # token mean: the vanilla weights
        loss, _, _ = weighted_token_nll(h, w, labels, coef, chunk_size=args.chunk_size)
        loss.backward()
        result["loss"] = loss

    def trl():
        from trl.kernels import ChunkedLogProbFunction
        from trl.kernels.chunked_logprob import _use_triton
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        # as add_fused_lm_head does (trl/trainer/utils.py): only the labelled positions where Triton runs
        compact = _use_triton(h.device)
        lp = ChunkedLogProbFunction.apply(h[mask] if compact else h, w, None,
                                          labels[mask] if compact else labels.clamp(min=0), 1.0,
                                          _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, TRL_OUTPUTS)[0]
        loss = -(lp.sum() if compact else lp.masked_fill(~mask, 0).sum()) / n.clamp(min=1)
        loss.backward()
        result["loss"] = loss
        result["chunk_size"] = _CHUNKED_LOGPROB_CHUNK_SIZE
        result["compact"] = compact

    def drop_grads():
        h.grad = w.grad = None

    fn = {"plain": plain, "fused": fused, "trl": trl}[impl]
    seconds, peak, method = measure_once(fn, args.device, after_warmup=drop_grads)
    return {"impl": impl, "tokens": args.loss_tokens, "seconds": seconds, "peak_bytes": peak, "memory_method": method,
            "loss": float(result["loss"]), "grad_hidden_norm": float(h.grad.float().norm()),
            "grad_weight_norm": float(w.grad.float().norm()), "torch_threads": torch.get_num_threads(),
            **{k: v for k, v in result.items() if k != "loss"}}


# ------------------------------------------------------------------------------------------------------- driver

def _subprocess(case: list[str], args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_case", *case, *args.passthrough]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-6000:])
        raise SystemExit(f"case {' '.join(case)} failed (exit {out.returncode})")
    return json.loads(lines[-1][7:])


def _rotated(items: list, k: int) -> list:
    """``items`` starting at position ``k`` (mod its length): repeat ``k`` runs the cases in another order."""
    return items[k % len(items):] + items[:k % len(items)] if items else []


def _repeated(kind: str, names: list[str], args, line) -> dict[str, list[dict]]:
    """Every case ``kind name`` ``args.repeats`` times, each repeat in another order (:func:`_rotated`), one
    subprocess per run; ``line(name, rep, result)`` is printed after each run."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(args.repeats):
        for name in _rotated(names, rep):
            runs[name].append(_subprocess([kind, name], args))
            print(line(name, rep, runs[name][-1]), flush=True)
    return runs


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise_arms(runs: dict[str, list[dict]]) -> dict[str, dict]:
    keep = ("trainer", "collator", "completion_only_loss", "assistant_only_loss", "bf16", "activation_checkpointing",
            "steps", "input_tokens", "supervised_tokens", "loss_first", "loss_last", "memory_method", "torch_threads")
    rows = {}
    for arm, rs in runs.items():
        row = {k: rs[0][k] for k in keep}
        for key in ("tokens_per_s_steady", "tokens_per_cpu_s_steady", "tokens_per_s_train", "tokens_per_s_end_to_end",
                    "setup_s", "train_s", "process_peak_bytes", "train_peak_delta_bytes", "cuda_peak_allocated_bytes"):
            row[key] = _median(rs, key)
        row["tokens_per_s_steady_all"] = [r["tokens_per_s_steady"] for r in rs]
        row["tokens_per_cpu_s_steady_all"] = [r["tokens_per_cpu_s_steady"] for r in rs]
        row["losses_repeat0"] = rs[0]["losses"]
        row["supervised_tokens_per_step"] = rs[0]["supervised_tokens_per_step"]
        rows[arm] = row
    return rows


def ratios(rows: dict[str, dict], memory: str = "process_peak_bytes", rate: str = "tokens_per_s_steady") -> dict:
    """ScaleSFTTrainer / TRL for every pair of (our arm, TRL arm) present; throughput > 1 and memory < 1 favour us.
    ``goal_met``: the ``rate`` ratio >= 1 and the ``memory`` ratio <= 1."""
    out = {}
    for ours in OURS:
        for theirs in THEIRS:
            if ours not in rows or theirs not in rows:
                continue
            a, b = rows[ours], rows[theirs]
            r = {}
            for key in ("tokens_per_s_steady", "tokens_per_cpu_s_steady", "tokens_per_s_train",
                        "tokens_per_s_end_to_end", "process_peak_bytes", "train_peak_delta_bytes",
                        "cuda_peak_allocated_bytes"):
                if a.get(key) is not None and b.get(key):
                    r[key] = a[key] / b[key]
            r["goal_met"] = bool(r.get(rate, 0) >= 1.0 and r.get(memory, 2) <= 1.0)
            out[f"{ours}/{theirs}"] = r
    return out


def summarise_loss(runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    ref = runs.get("trl")
    ref_s = _median(ref, "seconds") if ref else None
    ref_m = _median(ref, "peak_bytes") if ref else None
    for impl, rs in runs.items():
        s, m = _median(rs, "seconds"), _median(rs, "peak_bytes")
        rows.append({"impl": impl, "tokens": rs[0]["tokens"], "seconds_median": s, "seconds_all": [r["seconds"] for r in rs],
                     "peak_gib": m / 2**30, "time_vs_trl": s / ref_s if ref_s else None,
                     "peak_vs_trl": m / ref_m if ref_m else None, "loss": rs[0]["loss"],
                     "grad_hidden_norm": rs[0]["grad_hidden_norm"], "grad_weight_norm": rs[0]["grad_weight_norm"],
                     "memory_method": rs[0]["memory_method"], "torch_threads": rs[0]["torch_threads"],
                     **{k: rs[0][k] for k in ("chunk_size", "compact") if k in rs[0]}})
    return rows


def _gib(x):
    return f"{x / 2**30:.3f}" if x is not None else "-"


def _num(x, fmt):
    return format(x, fmt) if x is not None else "-"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated among {','.join(ARMS)}")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per arm (one epoch of steps x batch examples)")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the steady throughput")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=1, help="repeats of every arm / loss case, in rotating order")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the training arms")
    p.add_argument("--loss-impls", default=",".join(LOSS_IMPLS), help=f"among {','.join(LOSS_IMPLS)}; empty: skip")
    p.add_argument("--loss-tokens", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=151936, help="Qwen2.5-VL's tokenizer size")
    p.add_argument("--hidden", type=int, default=None, help="default: 256 on CPU, 2048 on CUDA")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--chunk-size", type=int, default=None, help="tokens per tile of the fused head (default: its own)")
    p.add_argument("--out", default=None)
    p.add_argument("--_case", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    from scale_vlm.fused_loss import DEFAULT_CHUNK_SIZE

    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.hidden = args.hidden or (2048 if cuda else 256)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.chunk_size = args.chunk_size or DEFAULT_CHUNK_SIZE
    if args._case:
        kind, *rest = args._case
        res = {"arm": lambda: run_arm(rest[0], args), "check": lambda: first_batch_check(args),
               "loss": lambda: run_loss_case(rest[0], args)}[kind]()
        print("RESULT " + json.dumps(res))
        return res

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    impls = [i.strip() for i in args.loss_impls.split(",") if i.strip()]
    for name, chosen, allowed in (("arm", arms, ARMS), ("loss impl", impls, LOSS_IMPLS)):
        bad = [x for x in chosen if x not in allowed]
        if bad:
            p.error(f"unknown {name} {', '.join(bad)}; choose among {', '.join(allowed)}")
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    args.passthrough = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                        "--learning-rate", str(args.learning_rate), "--threads", str(args.threads),
                        "--loss-tokens", str(args.loss_tokens), "--vocab", str(args.vocab), "--hidden",
                        str(args.hidden), "--dtype", args.dtype, "--chunk-size", str(args.chunk_size)]

    t_start = time.perf_counter()
    arm_runs = _repeated("arm", arms, args, lambda arm, rep, res: (
        f"  {arm:15s} rep {rep}: {_num(res['tokens_per_cpu_s_steady'], '.0f')} tok/cpu-s, "
        f"{_num(res['tokens_per_s_steady'], '.0f')} tok/s, peak {_gib(res['process_peak_bytes'])} GiB, "
        f"loss {_num(res['loss_first'], '.3f')} -> {_num(res['loss_last'], '.3f')}"))
    check = _subprocess(["check"], args) if {"vanilla", "trl_completion"} <= set(arms) else None
    loss_runs = _repeated("loss", impls, args, lambda impl, rep, res: (
        f"  loss {impl:6s} rep {rep}: {res['seconds']:.2f} s, peak {_gib(res['peak_bytes'])} GiB, "
        f"loss {res['loss']:.6f}"))

    rows = summarise_arms(arm_runs)
    mem_key = "cuda_peak_allocated_bytes" if cuda else "process_peak_bytes"
    # With one torch thread, process CPU time hardly depends on other load of a shared CPU: the stable rate there.
    rate_key = "tokens_per_s_steady" if cuda else "tokens_per_cpu_s_steady"
    rat = ratios(rows, mem_key, rate_key)
    loss_rows = summarise_loss(loss_runs)
    print(f"\ntraining, shipped tiny Qwen2-VL, {args.steps} steps x batch {args.batch_size} (steady rate after "
          f"{args.warmup} warm-up steps), device {args.device}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'arm':15s} {'tok/cpu-s':>9} {'tok/s':>7} {'tok/s e2e':>9} {'setup s':>7} {'peak GiB':>8} "
          f"{'train+GiB':>9} {'input tok':>9} {'superv tok':>10} {'loss first':>10} {'loss last':>9}")
    for arm, r in rows.items():
        print(f"{arm:15s} {_num(r['tokens_per_cpu_s_steady'], '9.0f')} {_num(r['tokens_per_s_steady'], '7.0f')} "
              f"{_num(r['tokens_per_s_end_to_end'], '9.0f')} {r['setup_s']:>7.2f} {_gib(r[mem_key]):>8} "
              f"{_gib(r['train_peak_delta_bytes']):>9} {r['input_tokens']:>9} {r['supervised_tokens']:>10} "
              f"{_num(r['loss_first'], '10.4f')} {_num(r['loss_last'], '9.4f')}")
    print(f"\nScaleSFTTrainer / TRL (goal: {rate_key} >= 1.0x at {mem_key} <= 1.0x)")
    for pair, r in rat.items():
        print(f"  {pair:24s} tok/cpu-s {_num(r.get('tokens_per_cpu_s_steady'), '.3f')}x  "
              f"tok/s {_num(r.get('tokens_per_s_steady'), '.3f')}x  e2e {_num(r.get('tokens_per_s_end_to_end'), '.3f')}x  "
              f"peak {_num(r.get(mem_key), '.3f')}x  train-delta {_num(r.get('train_peak_delta_bytes'), '.3f')}x  "
              f"goal {'met' if r['goal_met'] else 'NOT met'}")
    if check:
        print(f"\nfirst batch ({check['examples']} examples): same input ids {check['same_input_ids']}, "
              f"losses trl {check['trl']['loss']:.6f} (every token), trl_completion {check['trl_completion']['loss']:.6f}, "
              f"vanilla {check['vanilla']['loss']:.6f}; TRL's NLL on our supervised tokens "
              f"{_num(check.get('trl_nll_on_our_tokens'), '.6f')} (|diff| {_num(check.get('abs_diff_vs_our_vanilla'), '.2e')})")
        for arm in THEIRS:
            c = check[arm]
            print(f"  {arm}: supervises {c['supervised_tokens']} tokens vs ours {check['vanilla']['supervised_tokens']} "
                  f"({c.get('supervised_not_by_ours')} not by ours, e.g. {c.get('extra_tokens_decoded', [])[:4]})")
    if loss_rows:
        print(f"\nloss head forward+backward, token-mean NLL, T={args.loss_tokens}, vocab {args.vocab}, hidden "
              f"{args.hidden}, {args.dtype}, device {args.device}, median of {args.repeats}")
        print(f"{'impl':6s} {'time s':>8} {'peak GiB':>9} {'time/trl':>9} {'peak/trl':>9} {'loss':>12} {'|grad h|':>10}")
        for r in loss_rows:
            print(f"{r['impl']:6s} {r['seconds_median']:>8.2f} {r['peak_gib']:>9.3f} {_num(r['time_vs_trl'], '9.3f')} "
                  f"{_num(r['peak_vs_trl'], '9.3f')} {r['loss']:>12.6f} {r['grad_hidden_norm']:>10.6f}")
    import transformers
    import trl

    report = {
        "benchmark": "vs_trl", "device": args.device, "trl": trl.__version__, "transformers": transformers.__version__,
        "steps": args.steps, "warmup_steps": args.warmup, "batch_size": args.batch_size, "repeats": args.repeats,
        "threads": args.threads, "arms": rows, "ratios_ours_over_trl": rat, "first_batch_check": check,
        "goal": "ScaleSFTTrainer tokens/s >= 1.0x TRL's at <= its peak memory",
        "goal_measures": {"throughput": rate_key, "memory": mem_key},
        "loss_head": {"tokens": args.loss_tokens, "vocab": args.vocab, "hidden": args.hidden, "dtype": args.dtype,
                      "fused_chunk_size": args.chunk_size, "rows": loss_rows},
        "wall_s": time.perf_counter() - t_start, "machine": _common.machine(args.device),
    }
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
