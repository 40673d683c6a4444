"""``scale-vlm demo``: vanilla SFT vs SCALe-SFT on the built-in benchmark, end to end on a CPU.

Both runs start from fresh copies of the same tiny base model (shipped with the package, or built once), see the
same training data in the same order with the same seed and step budget, and are evaluated by greedy generation
on the same held-out questions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .bench.dataset import make_benchmark, to_training_format
from .knobs import BenchKnobs, ScheduleKnobs
from .segments import DEFAULT_TAGS

METHODS = ("vanilla", "scale")
RESULT_FILES = ("results.json", "results.md", "training_curves.png")


@dataclass
class DemoConfig(BenchKnobs, ScheduleKnobs):
    output_dir: str = field(default="runs/demo", metadata={"help": "results folder"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the training order and the initialisation"})
    quick: bool = field(default=False, metadata={"help": "smoke test: tiny data and step budget (< 2 min)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace existing results"})
    base_model: str = field(default="", metadata={"help": "base model folder (default: the shipped tiny base)"})
    num_train: int = field(default=2000, metadata={"help": "training questions"})
    num_test: int = field(default=200, metadata={"help": "held-out questions"})
    max_steps: int = field(default=1200, metadata={"help": "optimizer steps per method"})
    batch_size: int = field(default=16, metadata={"help": "examples per optimizer step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate (cosine decay, 5 percent warm-up)"})
    eval_batch_size: int = field(default=50, metadata={"help": "questions generated together"})
    max_new_tokens: int = field(default=200, metadata={"help": "generation budget per question"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (per process)"})
    parallel_methods: bool = field(default=True, metadata={
        "help": "train the two methods at once in two processes, one core each (same data, seeds and results as "
                "one after the other; ignored on a single-core machine)"})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "keep the base model's vision encoder frozen"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self):
        if self.quick:
            self.num_train, self.num_test, self.max_steps, self.batch_size = 64, 20, 6, 8
            self.max_new_tokens = min(self.max_new_tokens, 160)



def _check_output_dir(cfg: DemoConfig) -> Path:
    out = Path(cfg.output_dir)
    existing = [f for f in (*RESULT_FILES, *METHODS) if (out / f).exists()]
    if existing and not cfg.overwrite_output_dir:
        raise FileExistsError(f"{out} already holds demo results ({', '.join(existing)}); "
                              "pass --overwrite_output_dir to replace them")
    for name in existing:
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def majority_baseline(train_answers, test_answers) -> dict:
    answer, _ = Counter(train_answers).most_common(1)[0]
    acc = sum(a == answer for a in test_answers) / len(test_answers)
    return {"answer": answer, "accuracy": round(acc, 4)}


def _load_base(cfg: DemoConfig, out: Path):
    from .tiny.base_stage import get_base, load_base

    if cfg.base_model:
        return load_base(cfg.base_model)
    return get_base(cache_dir=out / "base", progress=cfg.progress)


def prepare_once(train_sft, base_dir: Path):
    """Render and segment the training data once; both methods then train on exactly the same rows."""
    from .data.prepare import prepare_dataset
    from .processors import load_processor

    prepared, _ = prepare_dataset(train_sft, load_processor(str(base_dir)), tags=DEFAULT_TAGS)
    return prepared


def train_one(method: str, cfg: DemoConfig, out: Path, train_ds, base_dir: Path, callbacks=None):
    """One SFT run with ``ScaleSFTTrainer`` (``callbacks``: extra ``TrainerCallback``s, e.g. evaluation during
    training); returns (model, processor, wall seconds, log_history)."""
    from .sft_config import ScaleSFTConfig
    from .sft_trainer import ScaleSFTTrainer
    from .tiny.base_stage import load_base

    model, processor = load_base(base_dir)  # a fresh copy for every method
    args = ScaleSFTConfig(
        output_dir=str(out / method), method=method, **cfg.schedule_kwargs(),
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01,
        adam_beta2=0.98, max_grad_norm=1.0, seed=cfg.seed, data_seed=cfg.seed, logging_steps=max(1, cfg.max_steps // 30),
        save_strategy="no", report_to="none", disable_tqdm=not cfg.progress, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), overwrite_output_dir=True, freeze_vision_tower=cfg.freeze_vision_tower,
    )
    trainer = ScaleSFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=processor,
                              callbacks=callbacks)
    t0 = time.time()
    trainer.train()
    wall = time.time() - t0
    trainer.save_state()
    model = trainer.model
    model.eval()
    return model, processor, wall, list(trainer.state.log_history)


def _train_and_evaluate(method: str, cfg: DemoConfig, out: Path, train_ds, base_dir: Path, examples):
    """Train one method, evaluate it greedily, write its predictions; returns (result record, log history)."""
    torch.set_num_threads(cfg.threads)
    logging.getLogger("scale_vlm").setLevel(logging.ERROR)
    from .eval.evaluate import evaluate_model

    print(f"\n== {method}: {cfg.max_steps} steps x {cfg.batch_size} examples ==", flush=True)
    model, processor, wall, hist = train_one(method, cfg, out, train_ds, base_dir)
    t0 = time.time()
    metrics, preds = evaluate_model(model, processor, examples, batch_size=cfg.eval_batch_size,
                                    max_new_tokens=cfg.max_new_tokens, tags=DEFAULT_TAGS, progress=cfg.progress)
    with open(out / method / "predictions.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in preds)
    final = [h for h in hist if "loss_think" in h][-1:] or [{}]
    record = {
        **{k: metrics[k] for k in ("accuracy", "malformed_rate", "mean_think_tokens", "median_think_tokens",
                                    "mean_answer_tokens", "num_examples")},
        "by_category": metrics.get("by_category", {}),
        "train_seconds": round(wall, 1), "eval_seconds": round(time.time() - t0, 1),
        "final_loss_think": final[0].get("loss_think"), "final_loss_answer": final[0].get("loss_answer"),
    }
    return record, hist


def plot_curves(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    styles = {"vanilla": "tab:blue", "scale": "tab:red"}
    for method, hist in histories.items():
        rows = [h for h in hist if "loss_think" in h]
        steps = [h["step"] for h in rows]
        axes[0].plot(steps, [h["loss_think"] for h in rows], color=styles[method], label=method)
        axes[1].plot(steps, [h["loss_answer"] for h in rows], color=styles[method], label=method)
        if method == "scale":
            axes[2].plot(steps, [h["w_think"] for h in rows], color="tab:purple", label="w_think")
            axes[2].plot(steps, [h["w_answer"] for h in rows], color="tab:orange", label="w_answer")
    for ax, title in zip(axes, ("think loss (token mean)", "answer loss (token mean)", "SCALe schedule weights")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(results: dict) -> str:
    lines = ["| method | accuracy | malformed | mean think tokens | train wall (s) |", "|---|---|---|---|---|"]
    for method in METHODS:
        r = results["methods"].get(method)
        if r:
            lines.append(f"| {method} | {r['accuracy']:.3f} | {r['malformed_rate']:.3f} | {r['mean_think_tokens']:.1f} | "
                         f"{r['train_seconds']:.0f} |")
    b = results["majority_baseline"]
    lines.append(f"| majority answer ({b['answer']!r}) | {b['accuracy']:.3f} | - | - | - |")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict:
    from .eval.adapters import builtin_examples
    from .tiny.base_stage import SHIPPED_BASE, has_shipped_base

    torch.set_num_threads(cfg.threads)
    logging.getLogger("scale_vlm").setLevel(logging.ERROR)
    out = _check_output_dir(cfg)
    t_start = time.time()
    model, processor = _load_base(cfg, out)
    base_dir = Path(cfg.base_model) if cfg.base_model else (SHIPPED_BASE if has_shipped_base() else out / "base")
    del model, processor
    train = make_benchmark(cfg.bench(cfg.seed, "train", cfg.num_train))
    test = make_benchmark(cfg.bench(cfg.seed, "test", cfg.num_test))
    train_sft = prepare_once(to_training_format(train), base_dir)
    examples = builtin_examples(test)
    results = {
        "config": asdict(cfg), "base_model": "shipped" if base_dir == SHIPPED_BASE else str(base_dir),
        "majority_baseline": majority_baseline(train["answer"], test["answer"]), "methods": {},
    }
    histories = {}
    jobs = [(method, cfg, out, train_sft, base_dir, examples) for method in METHODS]
    parallel = cfg.parallel_methods and available_cpus() >= 2
    if cfg.parallel_methods and not parallel:
        print("one CPU core available: training the methods one after the other", flush=True)
    if parallel:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # one set of progress bars on the terminal (the first method's); the other process trains silently
        jobs = [(m, c if i == 0 else replace(c, progress=False), *rest) for i, (m, c, *rest) in enumerate(jobs)]
        if cfg.progress:
            print(f"training {' and '.join(METHODS)} in parallel (progress bars: {METHODS[0]})", flush=True)
        # spawn: a clean interpreter per method (no forked torch threads); the inputs and results are this run's own.
        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_train_and_evaluate, *zip(*jobs)))
    else:
        done = [_train_and_evaluate(*job) for job in jobs]
    for method, (record, hist) in zip(METHODS, done):
        results["methods"][method] = record
        histories[method] = hist
    results["total_seconds"] = round(time.time() - t_start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(histories, out / "training_curves.png")
    table = format_table(results)
    md = [f"# scale-vlm demo (seed {cfg.seed}{', quick' if cfg.quick else ''})", "",
          f"{cfg.num_train} training questions, {cfg.max_steps} steps x {cfg.batch_size} per method, "
          f"{results['methods']['vanilla']['num_examples']} held-out questions, greedy decoding.", "", table, "",
          f"Total wall time {results['total_seconds']:.0f} s. Curves: training_curves.png."]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n" + table)
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'training_curves.png'} "
          f"({results['total_seconds']:.0f} s)")
    return results
