"""The comparison's stages, seed by seed: base model, SFT per method, GRPO from each SFT model, evaluation per arm.

Every stage goes through :func:`scale_vlm.stages.run_stage`, so a rerun reuses what finished and resumes an
interrupted SFT or GRPO stage from its last checkpoint (``--save_steps``). An SFT arm is
:func:`sft_stage` then :func:`evaluate_stage`; the demo runs its two methods as exactly these two SFT arms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..knobs import quick_message
from ..report import EVAL_METRICS
from ..stages import run_stage
from .config import ARM_LABELS, ARM_SFT, ARMS, RECORD_SETTINGS_BEFORE, REFERENCE_ARM, CompareConfig
from .summary import (
    format_markdown,
    grpo_prompt_share,
    grpo_reward_windows,
    paired_differences,
    plot_results,
    summarize,
)

logger = logging.getLogger(__name__)


def sft_stage(args, base_dir: str | Path, train_ds, model_dir: Path, keep_trainer_state: bool = False,
              resume: bool = False) -> dict:
    """One SFT run (``args`` from :func:`scale_vlm.drivers.sft_args`) from the model in ``base_dir``, or with
    ``resume`` from the last checkpoint in ``args.output_dir`` where there is one; saves the trained model to
    ``model_dir`` and, with ``keep_trainer_state``, the trainer state to ``args.output_dir`` (else that folder, its
    checkpoints with it, is removed when it is not ``model_dir``). Returns the stage results (time, tokens, log)."""
    from ..drivers import train_sft

    run = train_sft(base_dir, args, train_ds, resume=resume)
    run.save(model_dir)
    if keep_trainer_state:
        run.trainer.save_state()
    elif Path(args.output_dir) != Path(model_dir):
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return {"train_seconds": round(run.seconds, 2), "input_tokens": run.trainer.input_tokens,
            "supervised_tokens": run.trainer.supervised_tokens, "log_history": run.log_history}


def grpo_stage(cfg: CompareConfig, seed: int, sft_model: Path, prompts_ds, out: Path, probe_examples=()) -> dict:
    """One GRPO run from an SFT checkpoint, or from the last checkpoint in ``out / "trainer"`` where an interrupted
    run left one (``cfg.save_steps``); saves the model to ``out / "model"``. With ``cfg.grpo_probe_every``, the
    greedy probe evaluates ``probe_examples`` during the run; its time (that of every probe row in the log, those
    before a resume included) is reported apart from training time."""
    from ..drivers import checkpoint_args, train_grpo
    from ..grpo_config import ScaleGRPOConfig
    from ..grpo_trainer import GreedyProbe

    args = ScaleGRPOConfig(
        output_dir=str(out / "trainer"), max_steps=cfg.grpo_steps, per_device_train_batch_size=cfg.grpo_batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.grpo_learning_rate, lr_scheduler_type="constant", beta=cfg.beta, loss_type=cfg.loss_type,
        temperature=cfg.temperature, accuracy_weight=cfg.accuracy_weight, format_weight=cfg.format_weight,
        seed=seed, data_seed=seed, logging_steps=1, report_to="none", **checkpoint_args(cfg.save_steps),
        disable_tqdm=not cfg.progress, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
    )
    probes = [GreedyProbe(probe_examples, cfg.grpo_probe_every, batch_size=cfg.eval_batch_size,
                          max_new_tokens=cfg.max_new_tokens)] if cfg.grpo_probe_every else []
    run = train_grpo(sft_model, args, prompts_ds, callbacks=probes, resume=bool(cfg.save_steps))
    run.save(out / "model")
    shutil.rmtree(out / "trainer", ignore_errors=True)
    probe_seconds = sum(row["probe/seconds"] for row in run.log_history if "probe/seconds" in row)
    return {"train_seconds": round(run.seconds - probe_seconds, 2), "probe_seconds": round(probe_seconds, 2),
            "generated_tokens": run.trainer.generated_tokens, "log_history": run.log_history}


def evaluate_stage(model_dir: Path, examples, out: Path, *, batch_size: int, max_new_tokens: int, progress: bool,
                   metrics: tuple[str, ...] = EVAL_METRICS) -> dict:
    """Greedy evaluation of the model in ``model_dir``; writes predictions and metrics to ``out``; returns
    ``metrics`` of the evaluation."""
    from ..drivers import evaluate
    from ..eval.evaluate import write_results
    from ..tiny.shipped import load_base

    model, processor = load_base(model_dir)
    results, predictions = evaluate(model, processor, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                    progress=progress)
    write_results(out, results, predictions, overwrite=True)
    return {k: results[k] for k in metrics if k in results}


def base_model_dir(base_model: str, out: Path) -> tuple[str, str]:
    """(folder of the base model, its identity for the stage hashes): ``base_model`` when given, else the shipped
    tiny base, else one built once into ``out / "base"``."""
    from ..tiny.shipped import SHIPPED_BASE, get_base, has_shipped_base

    if base_model:
        return base_model, str(Path(base_model).resolve())
    if has_shipped_base():
        digest = hashlib.sha256((SHIPPED_BASE / "model.safetensors").read_bytes()).hexdigest()[:16]
        return str(SHIPPED_BASE), f"shipped:{digest}"
    # No shipped weights: build the base once (cached in the output folder, reused by every seed and rerun).
    cache = out / "base"
    run_stage(cache, {"stage": "base", "default": True}, lambda folder: (get_base(cache_dir=folder), {})[1])
    return str(cache), "built-default"


def user_data(cfg: CompareConfig) -> dict:
    """The user's splits for the four arms: SFT rows (the first ``num_train`` of the training split), GRPO prompts
    (``num_grpo_prompts`` of its rows after those, or its first ones with ``grpo_prompts="sft_rows"``) and the test
    examples (the first ``num_test``), read as ``sft`` and ``eval`` read them. Refused when the test prompts are not
    in the form of the training prompts (see :mod:`scale_vlm.eval.prompt_form`): the arms would be scored on prompts
    none of them was trained on."""
    from ..data.prepare import load_training_dataset
    from ..eval.adapters import load_eval_dataset, training_prompts
    from ..eval.prompt_form import differences, prompt_form
    from ..grpo_trainer import to_grpo_dataset

    rows, image_root = load_training_dataset(cfg.dataset_name, cfg.dataset_train_split)
    if len(rows) > cfg.num_train:
        rows = rows.select(range(cfg.num_train))
    read = dict(adapter=cfg.adapter, columns=cfg.columns(), answer_format=cfg.answer_format)
    if cfg.grpo_prompts == "held_out":
        prompts = load_eval_dataset(cfg.dataset_name, cfg.dataset_train_split, limit=len(rows) + cfg.num_grpo_prompts,
                                    **read)[len(rows):]
        if not prompts:
            raise ValueError(f"--dataset_name {cfg.dataset_name}: the {cfg.dataset_train_split!r} split has no rows "
                             f"after the {len(rows)} SFT trains on, so none is left for held-out GRPO prompts; pass a "
                             "smaller --num_train, or --grpo_prompts sft_rows to give GRPO the first SFT questions")
        if len(prompts) < cfg.num_grpo_prompts:
            logger.warning("%s: %d held-out GRPO prompts after the %d SFT rows (asked for --num_grpo_prompts %d)",
                           cfg.dataset_name, len(prompts), len(rows), cfg.num_grpo_prompts)
    else:
        prompts = load_eval_dataset(cfg.dataset_name, cfg.dataset_train_split, limit=cfg.num_grpo_prompts, **read)
    test = load_eval_dataset(cfg.dataset_name, cfg.dataset_test_split, limit=cfg.num_test, **read)
    trained = prompt_form(training_prompts(rows, image_root), f"{cfg.dataset_name} {cfg.dataset_train_split!r}")
    for name, examples in (("test", test), ("GRPO", prompts)):
        found = differences(trained, prompt_form([e.prompt for e in examples]))
        if found:
            raise ValueError(f"--dataset_name {cfg.dataset_name}: the {name} prompts differ from the SFT training "
                             f"prompts ({'; '.join(found)}); give the test split in the training format (read with "
                             "--adapter sft, the prompts as written) so every arm is scored on what it learnt")
    return {"sft": rows, "grpo": to_grpo_dataset(prompts), "test": test, "image_root": image_root}


def builtin_data(cfg: CompareConfig, seed: int) -> dict:
    """The built-in benchmark's splits for one seed: SFT rows (``num_train`` training questions with traces), GRPO
    prompts and test examples. Held-out GRPO prompts are questions of their own stream (``split="grpo"``), as
    independent of the SFT questions as the test questions are."""
    from ..bench.dataset import make_benchmark, to_training_format
    from ..eval.adapters import builtin_examples
    from ..grpo_trainer import to_grpo_dataset

    train = make_benchmark(cfg.bench(seed, "train", cfg.num_train))
    if cfg.grpo_prompts == "held_out":
        prompts = make_benchmark(cfg.bench(seed, "grpo", cfg.num_grpo_prompts))
    else:
        prompts = train.select(range(cfg.num_grpo_prompts))
    return {"sft": to_training_format(train), "grpo": to_grpo_dataset(builtin_examples(prompts)),
            "test": builtin_examples(make_benchmark(cfg.bench(seed, "test", cfg.num_test)))}


def run_seed(cfg: CompareConfig, seed: int, out: Path, base_dir: str, base_id: str) -> dict:
    """The four arms for one seed; returns ``{arm: record}``."""
    from ..drivers import checkpoint_args, sft_args
    from ..report import probe_curve, reward_curve

    root = out / f"seed{seed}"
    data_cache: dict = {}

    def data():
        if not data_cache and cfg.dataset_name:
            data_cache.update(user_data(cfg))
        if not data_cache:
            data_cache.update(builtin_data(cfg, seed))
        return data_cache

    def sft(method: str, folder: Path) -> dict:
        extra = {"image_root": data()["image_root"]} if data().get("image_root") else {}
        args = sft_args(folder / "trainer", method, cfg.schedule_kwargs(), steps=cfg.sft_steps,
                        batch_size=cfg.sft_batch_size, learning_rate=cfg.sft_learning_rate, seed=seed,
                        progress=cfg.progress, **checkpoint_args(cfg.save_steps), **extra)
        return sft_stage(args, base_dir, data()["sft"], folder / "model", resume=bool(cfg.save_steps))

    common = {"seed": seed, "base": base_id, "data": cfg.data_fields()}
    sft_records, arms = {}, {}
    for method in ("vanilla", "scale"):
        stage_cfg = {"stage": "sft", "method": method, **common, "sft": cfg.sft_fields()}
        logger.info("seed %s: SFT (%s)", seed, method)
        sft_records[method] = run_stage(root / f"sft_{method}", stage_cfg, lambda f, m=method: sft(m, f),
                                        resumable=True)
    grpo_records = {}
    for method in ("vanilla", "scale"):
        stage_cfg = {"stage": "grpo", "from": sft_records[method]["hash"], "seed": seed, "grpo": cfg.grpo_fields()}
        logger.info("seed %s: GRPO from SFT (%s)", seed, method)
        grpo_records[method] = run_stage(
            root / f"grpo_{method}", stage_cfg,
            lambda f, m=method: grpo_stage(cfg, seed, root / f"sft_{m}" / "model", data()["grpo"], f,
                                           data()["test"][:cfg.grpo_probe_size]), resumable=True)
    for arm in ARMS:
        sft_record = sft_records[ARM_SFT[arm]]
        grpo = grpo_records[ARM_SFT[arm]] if arm.endswith("_grpo") else None
        model_stage = grpo or sft_record
        model_dir = root / (f"grpo_{ARM_SFT[arm]}" if grpo else f"sft_{ARM_SFT[arm]}") / "model"
        eval_cfg = {"stage": "eval", "model": model_stage["hash"], "seed": seed, "eval": cfg.eval_fields()}
        logger.info("seed %s: evaluate %s", seed, ARM_LABELS[arm])
        ev = run_stage(root / f"eval_{arm}", eval_cfg,
                       lambda f, d=model_dir: evaluate_stage(d, data()["test"], f, batch_size=cfg.eval_batch_size,
                                                             max_new_tokens=cfg.max_new_tokens, progress=cfg.progress))
        sft_s = sft_record["results"]["train_seconds"]
        grpo_s = grpo["results"]["train_seconds"] if grpo else 0.0
        arms[arm] = {
            **ev["results"],
            "sft_seconds": sft_s, "grpo_seconds": grpo_s, "train_seconds": round(sft_s + grpo_s, 2),
            "sft_input_tokens": sft_record["results"]["input_tokens"],
            "sft_supervised_tokens": sft_record["results"]["supervised_tokens"],
            "grpo_generated_tokens": grpo["results"]["generated_tokens"] if grpo else 0,
            "reused_stages": [name for name, rec in (("sft", sft_record), ("grpo", grpo), ("eval", ev))
                              if rec is not None and rec["reused"]],
        }
        if grpo:
            arms[arm]["grpo_curve"] = reward_curve(grpo["results"]["log_history"])
            if cfg.grpo_probe_every:
                arms[arm]["grpo_probe"] = probe_curve(grpo["results"]["log_history"])
    return arms


def kept_or_run_seed(cfg: CompareConfig, seed: int, out: Path, base_dir: str, base_id: str,
                     say: Callable[[str], None] = logger.info) -> dict:
    """One seed's four arms: from ``records_dir/seed<S>.json`` when a run with the same settings left it there,
    else run (and, with ``records_dir``, kept there with the code's commit, the machine and the seed's CPU seconds).
    A record of other settings is refused, naming them: it would mix two comparisons in one table."""
    from ..stages import git_commit, machine

    kept = Path(cfg.records_dir) / f"seed{seed}.json" if cfg.records_dir else None
    settings = json.loads(json.dumps(cfg.record_settings(), default=str))
    if kept is not None and kept.is_file():
        record = json.loads(kept.read_text())
        recorded = record.get("settings", {})
        for section, before in RECORD_SETTINGS_BEFORE.items():  # a record kept before a field existed
            if isinstance(recorded.get(section), dict):
                recorded[section] = {**before, **recorded[section]}
        differ = sorted(k for k in settings if recorded.get(k) != settings[k])
        if differ:
            raise ValueError(f"{kept} holds seed {seed} of a comparison with other {', '.join(differ)} settings; "
                             "give another --records_dir, or move that record away to run the seed again")
        say(f"seed {seed}: taken from {kept} (commit {record.get('commit')}, {record.get('cpu_seconds')} CPU s)")
        return record["arms"]
    cpu0 = time.process_time()
    arms = run_seed(cfg, seed, out, base_dir, base_id)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        record = {"seed": seed, "settings": settings, "commit": git_commit(), "machine": machine(),
                  "cpu_seconds": round(time.process_time() - cpu0, 1), "arms": arms}
        kept.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return arms


def budget_warnings(cfg: CompareConfig, base_dir: str | Path, sample: int = 500) -> list[str]:
    """The generation budgets too short for the training responses: a trace cut off by ``--max_new_tokens``
    (evaluation) or ``--max_completion_length`` (GRPO) has no ``<answer>``, so it counts as malformed and earns no
    reward, which would score the budget instead of the arms. Measured on the first ``sample`` training responses
    (the user's training split, else the built-in benchmark's first seed at ``cfg``'s knobs), in the base model's
    tokens (the chat template adds a few). Rows that cannot be read are left to the SFT stage, which names them."""
    from transformers import AutoTokenizer

    if cfg.dataset_name:
        from ..data.formats import ExampleError, response_text
        from ..data.prepare import load_training_dataset

        rows, _ = load_training_dataset(cfg.dataset_name, cfg.dataset_train_split)
        responses = []
        for index in range(min(sample, cfg.num_train, len(rows))):
            try:
                responses.append(response_text(rows[index], index))
            except ExampleError:
                continue
        where = f"the first {len(responses)} readable rows of {cfg.dataset_name} {cfg.dataset_train_split!r}"
    else:
        from ..bench.dataset import make_benchmark

        responses = list(make_benchmark(cfg.bench(cfg.seeds[0], "train", min(sample, cfg.num_train)))["response"])
        where = f"the first {len(responses)} training questions"
    if not responses:
        return []
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    longest = max(len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"])
    room = int(1.5 * longest)
    return [f"--{name} {getattr(cfg, name)} is shorter than the longest training response ({longest} tokens in "
            f"{where}): a trace cut off there has no <answer>, counts as malformed and earns no reward; pass "
            f"--{name} {room} (1.5x) for this data"
            for name in ("max_new_tokens", "max_completion_length") if getattr(cfg, name) < longest]


def run_compare(cfg: CompareConfig, say: Callable[[str], None] = logger.info) -> dict:
    """All seeds; writes ``results.json``, ``results.md`` (returned as ``results["markdown"]``) and
    ``accuracy_vs_time.png`` to ``cfg.output_dir``; what ``--quick`` set goes to ``say`` (the command prints it)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.quick_settings:
        say(quick_message(cfg.quick_settings))
    t0 = time.perf_counter()
    base_dir, base_id = base_model_dir(cfg.base_model, out)
    if not cfg.quick:  # --quick's budgets are short on purpose (a smoke run)
        for warning in budget_warnings(cfg, base_dir):
            say("warning: " + warning)
    per_seed = {seed: kept_or_run_seed(cfg, seed, out, base_dir, base_id, say) for seed in cfg.seeds}
    summary = summarize(per_seed)
    ref = summary[REFERENCE_ARM]["train_seconds_mean"]
    results = {
        "config": asdict(cfg), "quick_settings": cfg.quick_settings,  # what --quick set (asdict has the result only)
        "base_model": base_id, "seeds": list(cfg.seeds),
        "per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary,
        "scale_sft_time_over_sft_grpo_time": summary["scale"]["train_seconds_mean"] / ref if ref else None,
        "wall_seconds_this_run": round(time.perf_counter() - t0, 1),
    }
    results["grpo_reward_windows"] = grpo_reward_windows(results)
    results["paired_accuracy"] = paired_differences(per_seed)
    results["grpo_prompt_share"] = grpo_prompt_share(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    markdown = format_markdown(results)
    (out / "results.md").write_text(markdown)
    plot_results(results, out / "accuracy_vs_time.png")
    results["markdown"] = markdown
    return results
