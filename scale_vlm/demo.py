"""``scale-vlm demo``: vanilla SFT vs SCALe-SFT on the built-in benchmark, end to end on a CPU.

The two methods are the comparison's two SFT arms (:mod:`scale_vlm.compare.pipeline`: ``sft_stage`` then
``evaluate_stage``) at the demo's budget: both start from fresh copies of the same tiny base model (shipped with the
package, or built once), see the same training data in the same order with the same seed and step budget, and are
evaluated by greedy generation on the same held-out questions; optionally in two processes at once.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .bench.dataset import make_benchmark, to_training_format
from .compare.pipeline import base_model_dir, evaluate_stage, sft_stage
from .drivers import checkpoint_args, prepare_sft_rows, sft_args
from .knobs import BenchKnobs, ScheduleKnobs, apply_quick, quick_message, was_given
from .log_output import label_warning_lines, warnings_on_stderr, worker_logging
from .report import EVAL_METRICS, majority_baseline, markdown_table, plot_training_curves
from .run_guard import RunFiles, check_output_dir, move_previous_run_aside

logger = logging.getLogger(__name__)

METHODS = ("vanilla", "scale")
RESULT_FILES = ("results.json", "results.md", "training_curves.png")
# What a run writes into output_dir (run_guard's one output-folder rule). Not base/: the base model built once when
# no shipped one exists is a cache, reused by the next run.
DEMO_RUN = RunFiles("demo", markers=(*RESULT_FILES, *METHODS), resume="resume it with --resume true")
# A method's finished arm (trained and evaluated), in its folder: what --resume true takes instead of training again.
METHOD_RECORD = "demo_method.json"
# Options that do not change what a method computes: a resumed run may give them anew.
NOT_RESULT_OPTIONS = ("output_dir", "overwrite_output_dir", "resume", "save_steps", "progress", "parallel_methods",
                      "threads")
QUICK_OUTPUT_DIR = "runs/demo-quick"
# --quick: a smoke run of the whole pipeline in about a minute (overrides only options left at their defaults).
QUICK = {"num_train": 64, "num_test": 20, "max_steps": 6, "batch_size": 8, "max_new_tokens": 160}
QUICK_NOTE = ("note: --quick is a smoke run of the pipeline, not a measurement: after a few steps the models have not "
              "learnt the output format yet, so an accuracy near 0 and a malformed rate near 1 are expected. Run "
              "without --quick for real numbers.")
# The generation budget left to the demo (--max_new_tokens 0): 1.5x the longest training response, and at least this.
# A trace cut off by the budget has no <answer> and would count as malformed, so a fixed budget would score the
# truncation of the long-trace regimes rather than their answers (scripts/regime_map.py uses the same rule).
MIN_NEW_TOKENS = 200
# The demo's regime (docs/regimes.md#the-demo-default); the benchmark's own defaults are the templated regime.
DEMO_REGIME = {"trace_verbosity": 0, "trace_repeat": 3, "trace_entropy": 2}


def _demo_knob(name: str):
    """A benchmark knob with the demo's default (``DEMO_REGIME``) and the shared help text."""
    return field(default=DEMO_REGIME[name], metadata=BenchKnobs.__dataclass_fields__[name].metadata)


@dataclass
class DemoConfig(BenchKnobs, ScheduleKnobs):
    # The demo's regime, not the benchmark's templated default: varied wording and traces 47x their answer's length,
    # the closest to real cold-start traces in which both methods still learn at this budget (docs/regimes.md).
    trace_verbosity: int = _demo_knob("trace_verbosity")
    trace_repeat: int = _demo_knob("trace_repeat")
    trace_entropy: int = _demo_knob("trace_entropy")
    output_dir: str = field(default="runs/demo", metadata={
        "help": "results folder (with --quick and left at its default: runs/demo-quick, so a quick run never blocks "
                "the full one)"})
    seed: int = field(default=0, metadata={"help": "seed of the data, the training order and the initialisation"})
    quick: bool = field(default=False, metadata={"help": "smoke test: tiny data and step budget (< 2 min)"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh in an output_dir holding a previous run: its files are moved into "
                "output_dir/previous-run-<time>/ (never deleted)"})
    base_model: str = field(default="", metadata={"help": "base model folder (default: the shipped tiny base)"})
    num_train: int = field(default=2000, metadata={"help": "training questions"})
    num_test: int = field(default=200, metadata={"help": "held-out questions"})
    max_steps: int = field(default=1200, metadata={"help": "optimizer steps per method"})
    batch_size: int = field(default=16, metadata={"help": "examples per optimizer step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate (cosine decay, 5 percent warm-up)"})
    eval_batch_size: int = field(default=50, metadata={"help": "questions generated together"})
    max_new_tokens: int = field(default=0, metadata={
        "help": f"generation budget per question (0: 1.5x the longest training response, at least {MIN_NEW_TOKENS})"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (per process)"})
    parallel_methods: bool = field(default=True, metadata={
        "help": "train the two methods at once in two processes, one core each (same data, seeds and results as "
                "one after the other; ignored on a single-core machine)"})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "keep the base model's vision encoder frozen"})
    save_steps: int = field(default=100, metadata={
        "help": "a checkpoint of each method every N steps, the newest kept (removed once the method is evaluated), "
                "so that --resume true continues a killed run (0: none)"})
    resume: bool = field(default=False, metadata={
        "help": "continue the run in output_dir: a method trained and evaluated there is taken as it is, one that "
                "was killed continues from its last checkpoint; a method or checkpoint of other settings is refused"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self):
        # --quick sets only what the user left at its default, and says so; an explicit value is kept.
        if self.quick and self.output_dir == DemoConfig.__dataclass_fields__["output_dir"].default \
                and not was_given("output_dir"):
            self.output_dir = QUICK_OUTPUT_DIR
        self.quick_settings: dict[str, int] = apply_quick(self, QUICK) if self.quick else {}
        for name in ("num_train", "num_test", "max_steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.save_steps < 0:
            raise ValueError(f"--save_steps must be 0 (no checkpoints) or positive, got {self.save_steps}")
        if self.resume and self.overwrite_output_dir:
            raise ValueError("--resume true continues the run in output_dir and --overwrite_output_dir true moves it "
                             "aside: give one of them")
        if self.max_new_tokens < 0:
            raise ValueError(f"--max_new_tokens must be 0 (from the training data) or positive, got "
                             f"{self.max_new_tokens}")
        # A bad schedule fails here, in this process, not inside the training workers.
        from .schedules import WeightSchedule

        WeightSchedule(self.schedule, self.think_weight_start, self.think_weight_end, self.answer_weight_start,
                       self.answer_weight_end)



def _check_output_dir(cfg: DemoConfig) -> Path:
    """Refuse a folder holding a previous demo run, or move that run aside with ``--overwrite_output_dir``."""
    out = Path(cfg.output_dir)
    check_output_dir(out, DEMO_RUN, cfg.overwrite_output_dir, cfg.resume, inputs={"--base_model": cfg.base_model})
    move_previous_run_aside(out, DEMO_RUN, cfg.overwrite_output_dir, cfg.resume)
    out.mkdir(parents=True, exist_ok=True)
    return out


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# The demo's names for two shared steps (tests/test_demo.py and tests/test_first_hour.py use them): the training data
# is rendered and segmented once, so both methods train on exactly the same rows; the curves of both runs.
prepare_once = prepare_sft_rows
plot_curves = plot_training_curves


def train_one(method: str, cfg: DemoConfig, out: Path, train_ds, base_dir: Path) -> dict:
    """The SFT stage of one method's arm: a fresh copy of the base trained with the shared recipe (with
    ``cfg.resume``, from the last checkpoint in ``out / method`` where a killed run left one); the model, its
    processor and the trainer state are kept in ``out / method`` (to evaluate again or start GRPO from)."""
    args = sft_args(out / method, method, cfg.schedule_kwargs(), steps=cfg.max_steps, batch_size=cfg.batch_size,
                    learning_rate=cfg.learning_rate, seed=cfg.seed, progress=cfg.progress,
                    freeze_vision_tower=cfg.freeze_vision_tower, **checkpoint_args(cfg.save_steps))
    return sft_stage(args, base_dir, train_ds, out / method, keep_trainer_state=True, resume=cfg.resume)


def method_settings(cfg: DemoConfig) -> dict:
    """What a method's arm depends on: every option but :data:`NOT_RESULT_OPTIONS` (the budget resolved)."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_RESULT_OPTIONS}


def finished_method(method: str, cfg: DemoConfig, out: Path):
    """With ``cfg.resume``: ``(record, log history)`` of the method's arm finished in ``out / method`` by a run of
    the same settings; None where it did not finish; a finished arm of other settings is refused, naming them."""
    path = out / method / METHOD_RECORD
    if not (cfg.resume and path.is_file()):
        return None
    kept = json.loads(path.read_text())
    differ = sorted(k for k, v in method_settings(cfg).items() if kept["settings"].get(k) != v)
    if differ:
        shown = ", ".join(f"--{k} ({kept['settings'].get(k)!r} there, {getattr(cfg, k)!r} now)" for k in differ)
        raise ValueError(f"--resume true: {out / method} holds the {method} arm of a run with other {shown}; resume "
                         "with that run's settings, or start afresh with --overwrite_output_dir true")
    return kept["record"], kept["log_history"]


class _Labelled:
    """A text stream that starts every line with ``label``."""

    def __init__(self, stream, label: str):
        self.stream, self.label, self.at_line_start = stream, label, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_line_start and piece.strip("\r\n"):
                self.stream.write(self.label)
            self.stream.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def method_pool(workers: int):
    """Worker processes that train the methods side by side. Spawned: a clean interpreter per method (no forked torch
    threads); the inputs and results are this run's own. Each starts with this process's package log level and, where
    this process prints ``warning: ...`` lines (the CLI), the same lines."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_logging,
                               initargs=(logging.getLogger("scale_vlm").getEffectiveLevel(), warnings_on_stderr()))


@dataclass
class DemoData:
    """One seed's data: the benchmark's training and test splits, the training rows rendered and segmented once
    (both methods train on exactly these), and the test questions as evaluation examples."""

    train: object
    test: object
    rows: object
    examples: list


def demo_data(cfg: DemoConfig, base_dir: Path) -> DemoData:
    from .eval.adapters import builtin_examples

    train = make_benchmark(cfg.bench(cfg.seed, "train", cfg.num_train))
    test = make_benchmark(cfg.bench(cfg.seed, "test", cfg.num_test))
    return DemoData(train, test, prepare_once(to_training_format(train), base_dir), builtin_examples(test))


def longest_response(rows) -> int:
    """The most labelled (supervised) tokens of any rendered training row."""
    return max(sum(label != -100 for label in labels) for labels in rows["labels"])


def generation_budget(cfg: DemoConfig, rows) -> int:
    """``cfg.max_new_tokens``, or where it is 0 the rule of :data:`MIN_NEW_TOKENS` on the rendered training rows."""
    if cfg.max_new_tokens:
        return cfg.max_new_tokens
    return max(MIN_NEW_TOKENS, int(1.5 * longest_response(rows)))


def train_and_evaluate(method: str, cfg: DemoConfig, out: Path, train_ds, base_dir: Path, examples,
                       label_lines: bool = False):
    """One method's arm: train, then evaluate the saved model greedily (predictions in ``out / method``); returns
    (result record, log history). The demo runs it per method, ``scripts/regime_map.py`` per arm of a cell."""
    torch.set_num_threads(cfg.threads)
    finished = finished_method(method, cfg, out)
    if finished is not None:
        print(f"{method}: trained and evaluated by the run being resumed; taken from {out / method / METHOD_RECORD}",
              flush=True)
        return finished
    if label_lines:
        # The two methods train at once: label every line each of them prints, warnings included (stderr itself is
        # left alone: its progress bars redraw their line with carriage returns, which a label would break).
        sys.stdout = _Labelled(sys.stdout, f"[{method}] ")
        label_warning_lines(f"[{method}] ")
    sft = train_one(method, cfg, out, train_ds, base_dir)
    t0 = time.time()
    metrics = evaluate_stage(out / method, examples, out / method, batch_size=cfg.eval_batch_size,
                             max_new_tokens=cfg.max_new_tokens, progress=cfg.progress,
                             metrics=(*EVAL_METRICS, "by_category"))
    hist = sft["log_history"]
    final = [h for h in hist if "loss_think" in h][-1:] or [{}]
    record = {
        **metrics, "by_category": metrics.get("by_category", {}),
        "train_seconds": round(sft["train_seconds"], 1), "eval_seconds": round(time.time() - t0, 1),
        "final_loss_think": final[0].get("loss_think"), "final_loss_answer": final[0].get("loss_answer"),
    }
    # the arm is done: what a resumed run takes, and its checkpoints are no longer needed
    (out / method / METHOD_RECORD).write_text(json.dumps(
        {"settings": method_settings(cfg), "record": record, "log_history": hist}, indent=1, default=str) + "\n")
    for checkpoint in (out / method).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    return record, hist


def format_table(results: dict) -> str:
    rows = [[method, f"{r['accuracy']:.3f}", f"{r['malformed_rate']:.3f}", f"{r['mean_think_tokens']:.1f}",
             f"{r['train_seconds']:.0f}"] for method, r in ((m, results["methods"].get(m)) for m in METHODS) if r]
    b = results["majority_baseline"]
    rows.append([f"majority answer ({b['answer']!r})", f"{b['accuracy']:.3f}", "-", "-", "-"])
    return markdown_table(("method", "accuracy", "malformed", "mean think tokens", "train wall (s)"), rows)


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = logger.info) -> dict:
    """Train and evaluate both methods; what the run does and its table go to ``say`` (the command prints them)."""
    from .tiny.shipped import SHIPPED_BASE

    torch.set_num_threads(cfg.threads)
    if cfg.base_model:
        from .run_guard import check_local_path

        check_local_path(cfg.base_model, "base model")
    out = _check_output_dir(cfg)
    if cfg.quick_settings:
        say(quick_message(cfg.quick_settings))
    t_start = time.time()
    base_dir = Path(base_model_dir(cfg.base_model, out)[0])
    data = demo_data(cfg, base_dir)
    # a copy, not dataclasses.replace: that would run --quick's defaults again (and forget what it set)
    cfg = copy.copy(cfg)
    cfg.max_new_tokens = generation_budget(cfg, data.rows)
    results = {
        "config": asdict(cfg), "quick_settings": cfg.quick_settings,  # what --quick set (asdict has the result only)
        "base_model": "shipped" if base_dir == SHIPPED_BASE else str(base_dir),
        "majority_baseline": majority_baseline(data.train["answer"], data.test["answer"]), "methods": {},
    }
    histories = {}
    jobs = [(method, cfg, out, data.rows, base_dir, data.examples) for method in METHODS]
    parallel = cfg.parallel_methods and available_cpus() >= 2
    if cfg.parallel_methods and not parallel:
        say("one CPU core available: training the methods one after the other")
    if parallel:
        # one set of progress bars on the terminal (the first method's); the other process trains silently
        jobs = [(m, c if i == 0 else replace(c, progress=False), *rest) for i, (m, c, *rest) in enumerate(jobs)]
        say(f"training {' and '.join(METHODS)} in parallel, {cfg.max_steps} steps x {cfg.batch_size} examples each"
            + (f" (progress bars: {METHODS[0]})" if cfg.progress else ""))
        with method_pool(len(jobs)) as pool:
            done = list(pool.map(train_and_evaluate, *zip(*jobs), [True] * len(jobs)))
    else:
        done = []
        for job in jobs:
            say(f"\n== {job[0]}: {cfg.max_steps} steps x {cfg.batch_size} examples ==")
            done.append(train_and_evaluate(*job))
    for method, (record, hist) in zip(METHODS, done):
        results["methods"][method] = record
        histories[method] = hist
    results["total_seconds"] = round(time.time() - t_start, 1)  # of this command: a resumed run's last segment only
    results["resumed"] = cfg.resume
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(histories, out / "training_curves.png")
    table = format_table(results)
    md = [f"# scale-vlm demo (seed {cfg.seed}{', quick' if cfg.quick else ''})", "",
          f"{cfg.num_train} training questions, {cfg.max_steps} steps x {cfg.batch_size} per method, "
          f"{results['methods']['vanilla']['num_examples']} held-out questions, greedy decoding.", "", table, "",
          f"{'Wall time of this resumed run' if cfg.resume else 'Total wall time'} {results['total_seconds']:.0f} s"
          f"{' (train wall: the whole runs)' if cfg.resume else ''}. Curves: training_curves.png. Trained models: "
          f"{', '.join(f'{m}/' for m in METHODS)} (usable with scale-vlm eval and grpo)."]
    if cfg.quick:
        md += ["", QUICK_NOTE]
    (out / "results.md").write_text("\n".join(md) + "\n")
    say("\n" + table)
    if cfg.quick:
        say("\n" + QUICK_NOTE)
    say(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'training_curves.png'} and the trained "
          f"models {', '.join(str(out / m) for m in METHODS)} ({results['total_seconds']:.0f} s)")
    return results
