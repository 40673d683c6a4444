"""``scale-vlm compare``: the four training recipes on identical data, seeds and evaluation, with their cost.

Arms: vanilla SFT, SCALe-SFT, vanilla SFT -> GRPO and SCALe-SFT -> GRPO. The GRPO arms start from the SFT
arms' checkpoints (reused, not retrained). Per seed, every arm sees the same training questions in the same order
and is evaluated by greedy generation on the same held-out questions with :func:`scale_vlm.eval.evaluate_model`.

Cost: the wall-clock time of each training stage (``trainer.train()`` only: no model loading, no evaluation),
input and supervised tokens for SFT, generated tokens for GRPO. An arm's training time is the sum of its stages.

Every stage (base model, each SFT, each GRPO, each evaluation) has its own folder holding ``stage.json`` (its
config, the hash of that config, its results) and a ``DONE`` marker with the same hash, written last. A rerun with
the same config reuses every finished stage; a stage whose config changed, or that never finished, is redone
(together with the stages downstream of it, whose hashes include it).

Outputs in ``output_dir``: ``results.json``, ``results.md`` and ``accuracy_vs_time.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .knobs import BENCH_KNOBS, BenchKnobs, ScheduleKnobs
from .segments import DEFAULT_TAGS

ARMS = ("sft", "scale", "sft_grpo", "scale_grpo")
ARM_LABELS = {"sft": "vanilla SFT", "scale": "SCALe-SFT", "sft_grpo": "vanilla SFT -> GRPO",
              "scale_grpo": "SCALe-SFT -> GRPO"}
ARM_SFT = {"sft": "vanilla", "scale": "scale", "sft_grpo": "vanilla", "scale_grpo": "scale"}
REFERENCE_ARM = "sft_grpo"  # "time relative to SFT+GRPO"
RESULT_FILES = ("results.json", "results.md", "accuracy_vs_time.png")
DONE = "DONE"
STAGE_FILE = "stage.json"

logger = logging.getLogger(__name__)


@dataclass
class CompareConfig(BenchKnobs, ScheduleKnobs):
    """One config for the whole comparison (``--config x.yaml`` or flags). Defaults: the embedded default
    (tiny base VLM, built-in benchmark); the SFT stage sees as many examples as the earlier 240-step demo
    (120 x 32, a fifth of today's demo), so the four arms fit about 13 minutes per seed. See docs/compare.md for
    measured times."""

    output_dir: str = field(default="runs/compare", metadata={"help": "results folder (stages are kept inside)"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds: data, order, init, sampling"})
    quick: bool = field(default=False, metadata={"help": "smoke test: tiny data and step budgets (a few minutes)"})
    base_model: str = field(default="", metadata={"help": "base model folder (default: the shipped tiny base)"})
    # data (built-in benchmark)
    num_train: int = field(default=3000, metadata={"help": "SFT training questions (with reasoning traces)"})
    num_grpo_prompts: int = field(default=256, metadata={"help": "GRPO prompts (the first N training questions)"})
    num_test: int = field(default=100, metadata={"help": "held-out evaluation questions"})
    # SFT (both methods share everything but the loss)
    sft_steps: int = field(default=120, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=32, metadata={"help": "SFT examples per optimizer step"})
    sft_learning_rate: float = field(default=2e-3, metadata={"help": "SFT peak learning rate (cosine, 5 percent warm-up)"})
    # GRPO (both GRPO arms share everything but their starting checkpoint)
    grpo_steps: int = field(default=24, metadata={"help": "GRPO optimizer steps"})
    grpo_batch_size: int = field(default=16, metadata={"help": "completions per GRPO step"})
    num_generations: int = field(default=4, metadata={"help": "completions per prompt (group size)"})
    max_completion_length: int = field(default=160, metadata={"help": "GRPO generation budget (tokens)"})
    grpo_learning_rate: float = field(default=1e-4, metadata={"help": "GRPO learning rate (constant)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (0: no reference model)"})
    loss_type: str = field(default="dapo", metadata={"help": "TRL GRPO loss: grpo, dr_grpo, dapo, bnpo, ..."})
    temperature: float = field(default=1.0, metadata={"help": "GRPO sampling temperature"})
    accuracy_weight: float = field(default=1.0, metadata={"help": "weight of the accuracy reward"})
    format_weight: float = field(default=0.5, metadata={"help": "weight of the format reward"})
    # evaluation
    eval_batch_size: int = field(default=50, metadata={"help": "questions generated together"})
    max_new_tokens: int = field(default=200, metadata={"help": "evaluation generation budget"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for the tiny model)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self):
        if isinstance(self.seeds, (int, str)):
            self.seeds = [int(s) for s in str(self.seeds).replace(",", " ").split()]
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if self.quick:
            self.num_train, self.num_grpo_prompts, self.num_test = 64, 16, 20
            self.sft_steps, self.sft_batch_size = 6, 8
            self.grpo_steps, self.grpo_batch_size, self.num_generations = 2, 8, 4
            self.max_completion_length = min(self.max_completion_length, 48)
            self.max_new_tokens = min(self.max_new_tokens, 64)
        if self.grpo_batch_size % self.num_generations:
            raise ValueError(f"grpo_batch_size ({self.grpo_batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations})")
        if self.num_grpo_prompts > self.num_train:
            raise ValueError("num_grpo_prompts cannot exceed num_train (GRPO prompts are training questions)")

    # The parts of the config each stage depends on (its hash), so that e.g. changing GRPO knobs reuses SFT.
    def data_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("num_train", *BENCH_KNOBS)}

    def sft_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("sft_steps", "sft_batch_size", "sft_learning_rate", "schedule",
                                              "think_weight_start", "think_weight_end", "answer_weight_start",
                                              "answer_weight_end")}

    def grpo_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("num_grpo_prompts", "grpo_steps", "grpo_batch_size", "num_generations",
                                              "max_completion_length", "grpo_learning_rate", "beta", "loss_type",
                                              "temperature", "accuracy_weight", "format_weight")}

    def eval_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("num_test", "max_new_tokens", *BENCH_KNOBS)}


# ------------------------------------------------------------------------------------------------- stages


def config_hash(config: dict) -> str:
    """A stable short hash of a JSON-able stage config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_done(folder: Path, digest: str) -> bool:
    marker = folder / DONE
    return marker.is_file() and marker.read_text().strip() == digest and (folder / STAGE_FILE).is_file()


def run_stage(folder: str | Path, config: dict, fn: Callable[[Path], dict]) -> dict:
    """Run ``fn(folder) -> results`` unless ``folder`` holds a finished run of the same ``config``.

    Returns the stage record ``{"config", "hash", "results", "reused"}``. A finished stage writes
    ``stage.json`` then the ``DONE`` marker (holding the config hash). An unfinished or stale folder is never
    deleted: it is moved aside to ``<name>.old-<k>`` and the stage starts afresh."""
    folder = Path(folder)
    digest = config_hash(config)
    if stage_done(folder, digest):
        record = json.loads((folder / STAGE_FILE).read_text())
        record["reused"] = True
        logger.warning("reusing finished stage %s", folder)
        return record
    if folder.exists():
        k = 1
        while folder.with_name(f"{folder.name}.old-{k}").exists():
            k += 1
        aside = folder.with_name(f"{folder.name}.old-{k}")
        logger.warning("stage folder %s is unfinished or from another config; moving it to %s", folder, aside)
        folder.rename(aside)
    folder.mkdir(parents=True)
    results = fn(folder)
    record = {"config": config, "hash": digest, "results": results}
    (folder / STAGE_FILE).write_text(json.dumps(record, indent=1, default=str) + "\n")
    (folder / DONE).write_text(digest + "\n")
    record["reused"] = False
    return record


# ----------------------------------------------------------------------------------------------- training


def _sft_trainer_class():
    from .sft_trainer import ScaleSFTTrainer

    class CountingSFTTrainer(ScaleSFTTrainer):
        """Counts input tokens (attention mask) and supervised tokens of every optimizer step."""

        input_tokens = 0
        supervised_tokens = 0

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batch_samples, n = super().get_batch_samples(epoch_iterator, num_batches, device)
            for batch in batch_samples:
                self.input_tokens += int(batch["attention_mask"].sum())
                self.supervised_tokens += int((batch["labels"][:, 1:] != -100).sum()) if "labels" in batch else 0
            return batch_samples, n

    return CountingSFTTrainer


def train_sft(method: str, cfg: CompareConfig, seed: int, base_dir: str, train_ds, out: Path) -> dict:
    """One SFT run from the base model; saves the model to ``out/model``."""
    from .sft_config import ScaleSFTConfig
    from .tiny.base_stage import load_base

    model, processor = load_base(base_dir)
    args = ScaleSFTConfig(
        output_dir=str(out / "trainer"), method=method, **cfg.schedule_kwargs(),
        max_steps=cfg.sft_steps, per_device_train_batch_size=cfg.sft_batch_size, gradient_accumulation_steps=1,
        learning_rate=cfg.sft_learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01,
        adam_beta2=0.98, max_grad_norm=1.0, seed=seed, data_seed=seed, logging_steps=max(1, cfg.sft_steps // 30),
        save_strategy="no", report_to="none", disable_tqdm=not cfg.progress, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), overwrite_output_dir=True,
    )
    trainer = _sft_trainer_class()(model=model, args=args, train_dataset=train_ds, processing_class=processor)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(out / "model", safe_serialization=True)
    processor.save_pretrained(out / "model")
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {"train_seconds": round(seconds, 2), "input_tokens": trainer.input_tokens,
            "supervised_tokens": trainer.supervised_tokens, "log_history": trainer.state.log_history}


def train_grpo(cfg: CompareConfig, seed: int, sft_model: Path, prompts_ds, out: Path) -> dict:
    """One GRPO run from an SFT checkpoint; saves the model to ``out/model``."""
    from .grpo_config import ScaleGRPOConfig
    from .grpo_trainer import ScaleGRPOTrainer
    from .tiny.base_stage import load_base

    model, processor = load_base(sft_model)
    args = ScaleGRPOConfig(
        output_dir=str(out / "trainer"), max_steps=cfg.grpo_steps, per_device_train_batch_size=cfg.grpo_batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.grpo_learning_rate, lr_scheduler_type="constant", beta=cfg.beta, loss_type=cfg.loss_type,
        temperature=cfg.temperature, accuracy_weight=cfg.accuracy_weight, format_weight=cfg.format_weight,
        seed=seed, data_seed=seed, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=not cfg.progress, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )
    trainer = ScaleGRPOTrainer(model=model, args=args, train_dataset=prompts_ds, processing_class=processor)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(out / "model", safe_serialization=True)
    processor.save_pretrained(out / "model")
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {"train_seconds": round(seconds, 2), "generated_tokens": trainer.generated_tokens,
            "log_history": trainer.state.log_history}


def reward_curve(log_history: list[dict]) -> list[dict]:
    """Per-step GRPO metrics from a trainer log: step, mean reward, accuracy/format reward, completion length."""
    keys = {"reward": "reward", "accuracy": "rewards/accuracy_reward/mean", "format": "rewards/format_reward/mean",
            "completion_length": "completions/mean_length"}
    return [{"step": h["step"], **{k: h[v] for k, v in keys.items() if v in h}} for h in log_history if "reward" in h]


def evaluate_stage(cfg: CompareConfig, model_dir: Path, examples, out: Path) -> dict:
    from .eval.evaluate import evaluate_model, write_results
    from .tiny.base_stage import load_base

    model, processor = load_base(model_dir)
    model.eval()
    metrics, predictions = evaluate_model(model, processor, examples, batch_size=cfg.eval_batch_size,
                                          max_new_tokens=cfg.max_new_tokens, tags=DEFAULT_TAGS, progress=cfg.progress)
    write_results(out, metrics, predictions, overwrite=True)
    return {k: metrics[k] for k in ("accuracy", "malformed_rate", "mean_think_tokens", "median_think_tokens",
                                    "mean_answer_tokens", "num_examples")}


# ------------------------------------------------------------------------------------------------- runner


def _base_dir(cfg: CompareConfig, out: Path) -> tuple[str, str]:
    """(folder of the base model, its identity for the stage hashes)."""
    from .tiny.base_stage import SHIPPED_BASE, get_base, has_shipped_base

    if cfg.base_model:
        return cfg.base_model, str(Path(cfg.base_model).resolve())
    if has_shipped_base():
        digest = hashlib.sha256((SHIPPED_BASE / "model.safetensors").read_bytes()).hexdigest()[:16]
        return str(SHIPPED_BASE), f"shipped:{digest}"
    # No shipped weights: build the base once (cached in the output folder, reused by every seed and rerun).
    cache = out / "base"
    run_stage(cache, {"stage": "base", "default": True}, lambda folder: (get_base(cache_dir=folder), {})[1])
    return str(cache), "built-default"


def run_seed(cfg: CompareConfig, seed: int, out: Path, base_dir: str, base_id: str) -> dict:
    """The four arms for one seed; returns ``{arm: record}``."""
    from .bench.dataset import make_benchmark, to_training_format
    from .eval.adapters import builtin_examples
    from .grpo_trainer import to_grpo_dataset

    root = out / f"seed{seed}"
    data_cache: dict = {}

    def data():
        if not data_cache:
            train = make_benchmark(cfg.bench(seed, "train", cfg.num_train))
            test = make_benchmark(cfg.bench(seed, "test", cfg.num_test))
            data_cache["sft"] = to_training_format(train)
            data_cache["grpo"] = to_grpo_dataset(builtin_examples(train.select(range(cfg.num_grpo_prompts))))
            data_cache["test"] = builtin_examples(test)
        return data_cache

    common = {"seed": seed, "base": base_id, "data": cfg.data_fields()}
    sft_records, arms = {}, {}
    for method in ("vanilla", "scale"):
        stage_cfg = {"stage": "sft", "method": method, **common, "sft": cfg.sft_fields()}
        print(f"\n== seed {seed}: SFT ({method}) ==", flush=True)
        sft_records[method] = run_stage(root / f"sft_{method}", stage_cfg,
                                        lambda f, m=method: train_sft(m, cfg, seed, base_dir, data()["sft"], f))
    grpo_records = {}
    for method in ("vanilla", "scale"):
        stage_cfg = {"stage": "grpo", "from": sft_records[method]["hash"], "seed": seed, "grpo": cfg.grpo_fields()}
        print(f"\n== seed {seed}: GRPO from SFT ({method}) ==", flush=True)
        grpo_records[method] = run_stage(
            root / f"grpo_{method}", stage_cfg,
            lambda f, m=method: train_grpo(cfg, seed, root / f"sft_{m}" / "model", data()["grpo"], f))
    for arm in ARMS:
        sft = sft_records[ARM_SFT[arm]]
        grpo = grpo_records[ARM_SFT[arm]] if arm.endswith("_grpo") else None
        model_stage = grpo or sft
        model_dir = root / (f"grpo_{ARM_SFT[arm]}" if grpo else f"sft_{ARM_SFT[arm]}") / "model"
        eval_cfg = {"stage": "eval", "model": model_stage["hash"], "seed": seed, "eval": cfg.eval_fields()}
        print(f"\n== seed {seed}: evaluate {ARM_LABELS[arm]} ==", flush=True)
        ev = run_stage(root / f"eval_{arm}", eval_cfg, lambda f, d=model_dir: evaluate_stage(cfg, d, data()["test"], f))
        sft_s = sft["results"]["train_seconds"]
        grpo_s = grpo["results"]["train_seconds"] if grpo else 0.0
        arms[arm] = {
            **ev["results"],
            "sft_seconds": sft_s, "grpo_seconds": grpo_s, "train_seconds": round(sft_s + grpo_s, 2),
            "sft_input_tokens": sft["results"]["input_tokens"],
            "sft_supervised_tokens": sft["results"]["supervised_tokens"],
            "grpo_generated_tokens": grpo["results"]["generated_tokens"] if grpo else 0,
            "reused_stages": [name for name, rec in (("sft", sft), ("grpo", grpo), ("eval", ev))
                              if rec is not None and rec["reused"]],
        }
        if grpo:
            arms[arm]["grpo_curve"] = reward_curve(grpo["results"]["log_history"])
    return arms


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(per_seed: dict[int, dict]) -> dict:
    """Per arm: mean and sample standard deviation over seeds (and min/max of accuracy), time ratios."""
    summary = {}
    for arm in ARMS:
        rows = [per_seed[s][arm] for s in per_seed]
        entry = {"label": ARM_LABELS[arm], "num_seeds": len(rows)}
        for key in ("accuracy", "malformed_rate", "mean_think_tokens", "train_seconds", "sft_seconds",
                    "grpo_seconds", "sft_supervised_tokens", "grpo_generated_tokens"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std([float(r[key]) for r in rows])
        entry["accuracy_min"] = min(r["accuracy"] for r in rows)
        entry["accuracy_max"] = max(r["accuracy"] for r in rows)
        summary[arm] = entry
    reference = summary[REFERENCE_ARM]["train_seconds_mean"]
    for arm in ARMS:
        summary[arm]["time_vs_sft_grpo"] = summary[arm]["train_seconds_mean"] / reference if reference else None
    return summary


def format_markdown(results: dict) -> str:
    cfg, summary = results["config"], results["summary"]
    seeds = results["seeds"]
    lines = [
        f"# scale-vlm compare ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}"
        f"{', quick' if cfg['quick'] else ''})",
        "",
        f"SFT: {cfg['sft_steps']} steps x {cfg['sft_batch_size']} of {cfg['num_train']} questions. "
        f"GRPO: {cfg['grpo_steps']} steps x {cfg['grpo_batch_size']} completions ({cfg['num_generations']} per prompt, "
        f"max {cfg['max_completion_length']} tokens, loss {cfg['loss_type']}). Evaluation: {cfg['num_test']} held-out "
        f"questions, greedy, max {cfg['max_new_tokens']} tokens. Mean +- sample std over seeds.",
        "",
        "| arm | accuracy | malformed rate | think tokens | training time (s) | time relative to SFT+GRPO |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        s = summary[arm]
        ratio = s["time_vs_sft_grpo"]
        lines.append(
            f"| {s['label']} | {s['accuracy_mean']:.3f} +- {s['accuracy_std']:.3f} | "
            f"{s['malformed_rate_mean']:.3f} | {s['mean_think_tokens_mean']:.1f} | "
            f"{s['train_seconds_mean']:.0f} +- {s['train_seconds_std']:.0f} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    ratio = results["scale_sft_time_over_sft_grpo_time"]
    lines += ["", f"SCALe-SFT time / SFT+GRPO time: {'-' if ratio is None else f'{ratio:.3f}'}", "",
              "| arm | SFT s | GRPO s | SFT supervised tokens | GRPO generated tokens | accuracy min..max |",
              "|---|---|---|---|---|---|"]
    for arm in ARMS:
        s = summary[arm]
        lines.append(f"| {s['label']} | {s['sft_seconds_mean']:.0f} | {s['grpo_seconds_mean']:.0f} | "
                     f"{s['sft_supervised_tokens_mean']:.0f} | {s['grpo_generated_tokens_mean']:.0f} | "
                     f"{s['accuracy_min']:.3f}..{s['accuracy_max']:.3f} |")
    lines += ["", "GRPO mean reward (weighted sum of accuracy and format rewards), first -> last step, per seed:", ""]
    for arm in ("sft_grpo", "scale_grpo"):
        for seed in seeds:
            curve = results["per_seed"][str(seed)][arm].get("grpo_curve", [])
            if curve:
                lines.append(f"- {ARM_LABELS[arm]}, seed {seed}: {curve[0]['reward']:.3f} -> {curve[-1]['reward']:.3f}"
                             f" (accuracy reward {curve[0].get('accuracy', 0):.3f} -> {curve[-1].get('accuracy', 0):.3f},"
                             f" {len(curve)} steps)")
    lines += ["", "Plot: accuracy_vs_time.png."]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    colours = {"sft": "tab:blue", "scale": "tab:red", "sft_grpo": "tab:cyan", "scale_grpo": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for arm in ARMS:
        s = summary[arm]
        ax.errorbar(s["train_seconds_mean"], s["accuracy_mean"], xerr=s["train_seconds_std"], yerr=s["accuracy_std"],
                    fmt="o", capsize=4, color=colours[arm], label=s["label"])
    ax.set_xlabel("training time (s, SFT + GRPO stages)")
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(f"accuracy vs training time ({len(results['seeds'])} seed(s))")
    ax.legend(fontsize=8)
    ax = axes[1]
    for arm in ("sft_grpo", "scale_grpo"):
        for i, seed in enumerate(results["seeds"]):
            curve = results["per_seed"][str(seed)][arm].get("grpo_curve", [])
            ax.plot([c["step"] for c in curve], [c["reward"] for c in curve], color=colours[arm], alpha=0.8,
                    label=ARM_LABELS[arm] if i == 0 else None)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO mean reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_compare(cfg: CompareConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    logging.getLogger("scale_vlm").setLevel(logging.ERROR)
    logging.getLogger(__name__).setLevel(logging.WARNING)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_dir, base_id = _base_dir(cfg, out)
    per_seed = {seed: run_seed(cfg, seed, out, base_dir, base_id) for seed in cfg.seeds}
    summary = summarize(per_seed)
    ref = summary[REFERENCE_ARM]["train_seconds_mean"]
    results = {
        "config": asdict(cfg), "base_model": base_id, "seeds": list(cfg.seeds),
        "per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary,
        "scale_sft_time_over_sft_grpo_time": summary["scale"]["train_seconds_mean"] / ref if ref else None,
        "wall_seconds_this_run": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "results.md").write_text(format_markdown(results))
    plot_results(results, out / "accuracy_vs_time.png")
    print("\n" + format_markdown(results))
    print(f"wrote {', '.join(str(out / f) for f in RESULT_FILES)}")
    return results
