"""Tag-aware evaluation: generate, parse the ``<answer>``, score it, aggregate metrics, write result files."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..parsing import parse_output
from ..report import majority_baseline
from ..scoring import score_answer
from ..segments import DEFAULT_TAGS, TagFields, Tags
from .adapters import ADAPTERS, ColumnMapping, EvalExample, load_eval_dataset
from .generate import Completion, count_tokens, generate_completions
from .prompt_form import check_prompts

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


@dataclass
class EvalConfig(TagFields):
    # TRL's option names, as in scale-vlm sft; the older --model / --dataset / --split still work (aliases).
    model_name_or_path: str = field(default=None, metadata={
        "help": "model folder or hub name (AutoModelForImageTextToText)", "aliases": ["--model"]})
    dataset_name: str = field(default=None, metadata={
        "help": "local file/folder, a hub dataset, or one of: scienceqa, iconqa, builtin", "aliases": ["--dataset"]})
    output_dir: str = field(default=None, metadata={"help": "where predictions.jsonl and metrics.json go"})
    dataset_test_split: str = field(default="test", metadata={"help": "split to evaluate", "aliases": ["--split"]})
    adapter: str = field(default="auto", metadata={"help": f"dataset schema, one of {ADAPTERS}"})
    max_new_tokens: int = field(default=256, metadata={"help": "generation budget per example"})
    batch_size: int = field(default=16, metadata={"help": "examples generated together"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N examples"})
    image_only: bool = field(default=False, metadata={"help": "keep only examples with an image (ScienceQA IMG)"})
    image_column: str | None = field(default="image", metadata={"help": "generic adapter: image column ('' = none)"})
    question_column: str = field(default="question", metadata={"help": "generic adapter: question column"})
    answer_column: str = field(default="answer", metadata={"help": "generic adapter: answer column"})
    choices_column: str | None = field(default=None, metadata={
        "help": "generic adapter: choices column (default: 'choices' when the data has one; '' for none)"})
    category_column: str | None = field(default=None, metadata={"help": "generic adapter: category column"})
    id_column: str | None = field(default=None, metadata={"help": "generic adapter: id column"})
    answer_format: str = field(default="auto", metadata={
        "help": "with choices: 'index' (answers are 0-based option indices), 'text' (a letter or the choice's text) "
                "or 'auto' (an integer that could be either is refused)"})
    builtin_size: int = field(default=500, metadata={"help": "--dataset_name builtin: examples to generate"})
    seed: int = field(default=0, metadata={"help": "random seed; also the built-in benchmark's generation seed"})
    dtype: str = field(default="auto", metadata={"help": "model dtype: auto, float32, bfloat16, float16"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1 ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model code from the hub (off)"})
    allow_prompt_mismatch: bool = field(default=False, metadata={
        "help": "score even when the prompts differ from those the model was trained on (its prompt_form.json): "
                "said loudly and recorded in metrics.json; refused otherwise"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh in an output_dir holding a previous run: its files are moved into "
                "output_dir/previous-run-<time>/ (never deleted)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar while generating"})

    def __post_init__(self):
        for name in ("model_name_or_path", "dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"--adapter must be one of {ADAPTERS}, got {self.adapter!r}")

    @property
    def columns(self) -> ColumnMapping | None:
        mapping = ColumnMapping(
            image_column=self.image_column or None, question_column=self.question_column,
            answer_column=self.answer_column, choices_column=self.choices_column,
            category_column=self.category_column or None, id_column=self.id_column or None,
        )
        # Only an explicit mapping forces the generic adapter under "auto".
        return None if mapping == ColumnMapping() and self.adapter != "columns" else mapping


def _rate(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(predictions: Sequence[dict]) -> dict:
    """Metrics of prediction rows (see ``docs/evaluation.md`` for the definitions)."""
    think = [p["think_tokens"] for p in predictions]
    answer = [p["answer_tokens"] for p in predictions]
    metrics = {
        "accuracy": _rate([p["correct"] for p in predictions]),
        "malformed_rate": _rate([p["malformed"] for p in predictions]),
        # correct answers the parser recovered from malformed replies: accuracy a tag-trained model did not earn
        "correct_malformed_rate": _rate([p["correct"] and p["malformed"] for p in predictions]),
        "mean_think_tokens": statistics.fmean(think) if think else 0.0,
        "median_think_tokens": float(statistics.median(think)) if think else 0.0,
        "mean_answer_tokens": statistics.fmean(answer) if answer else 0.0,
        "num_examples": len(predictions),
    }
    if predictions and all("hit_budget" in p for p in predictions):  # rows from generation, not given outputs
        metrics["budget_hit_rate"] = _rate([p["hit_budget"] for p in predictions])
    categories = sorted({p["category"] for p in predictions if p["category"] is not None})
    if categories:
        metrics["by_category"] = {
            category: {
                "accuracy": _rate([p["correct"] for p in rows]),
                "malformed_rate": _rate([p["malformed"] for p in rows]),
                "num_examples": len(rows),
            }
            for category in categories
            for rows in [[p for p in predictions if p["category"] == category]]
        }
    return metrics


def score_outputs(
    examples: Sequence[EvalExample], outputs: Sequence[str], tokenizer, tags: Tags = DEFAULT_TAGS,
    hit_budget: Sequence[bool] | None = None,
) -> list[dict]:
    """Prediction rows for raw ``outputs`` (one per example): parsed answer, correctness, malformed, lengths; with
    ``hit_budget`` (one flag per output, from generation) also whether each output ran out of its budget."""
    if len(examples) != len(outputs) or (hit_budget is not None and len(hit_budget) != len(outputs)):
        raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs"
                         + ("" if hit_budget is None else f" and {len(hit_budget)} budget flags"))
    rows = []
    for i, (example, output) in enumerate(zip(examples, outputs)):
        parsed = parse_output(output, tags)
        try:
            correct = score_answer(parsed.answer, example.gold, example.choices)
        except ValueError as err:
            raise ValueError(f"example {example.id!r}: {err}") from err
        rows.append({
            "id": example.id,
            "prompt": example.prompt,
            "output": output,
            "parsed_answer": parsed.answer,
            "gold": example.gold,
            "correct": correct,
            "malformed": parsed.malformed,
            "malformed_reason": parsed.reason,
            "think_tokens": count_tokens(parsed.think, tokenizer),
            "answer_tokens": count_tokens(parsed.answer, tokenizer),
            "category": example.category,
        })
        if hit_budget is not None:
            rows[-1]["hit_budget"] = bool(hit_budget[i])
    return rows


def evaluate_model(
    model, processor, examples: Sequence[EvalExample], *, batch_size: int = 16, max_new_tokens: int = 256,
    tags: Tags = DEFAULT_TAGS, progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Greedy-generate for ``examples``, then parse and score: ``(metrics, prediction rows)``."""
    examples = list(examples)
    if not examples:
        raise ValueError("no examples to evaluate")
    completions = generate_completions(model, processor, examples, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, progress=progress, tags=tags)
    return score_completions(examples, completions, processor, tags)


def score_completions(examples: Sequence[EvalExample], completions: Sequence[Completion], processor,
                      tags: Tags = DEFAULT_TAGS) -> tuple[dict, list[dict]]:
    """Parse and score completions, one per example in the same order: ``(metrics, prediction rows)``."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    predictions = score_outputs(examples, [c.text for c in completions], getattr(processor, "tokenizer", processor),
                                tags, hit_budget=[c.hit_budget for c in completions])
    return summarize(predictions), predictions


def eval_run():
    """What ``scale-vlm eval`` writes into its output folder, for run_guard's one output-folder rule (imported here:
    run_guard loads TRL, which this module does not need)."""
    from ..run_guard import RunFiles

    return RunFiles("eval", markers=(PREDICTIONS_FILE, METRICS_FILE))


def write_results(output_dir: str | Path, metrics: dict, predictions: Sequence[dict], overwrite: bool = False) -> None:
    """Write ``predictions.jsonl`` and ``metrics.json``; existing ones are refused unless ``overwrite`` (replaced:
    ``run_eval`` has moved them aside by then, the comparison's stages replace their own)."""
    from ..run_guard import check_output_dir

    output_dir = Path(output_dir)
    check_output_dir(output_dir, eval_run(), overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / PREDICTIONS_FILE, "w", encoding="utf-8") as f:
        for row in predictions:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def format_summary(metrics: dict) -> str:
    lines = [
        f"examples {metrics['num_examples']}  accuracy {metrics['accuracy']:.3f}  "
        f"malformed {metrics['malformed_rate']:.3f}  think tokens mean {metrics['mean_think_tokens']:.1f} "
        f"median {metrics['median_think_tokens']:.1f}  answer tokens mean {metrics['mean_answer_tokens']:.1f}"
    ]
    baseline = metrics.get("majority_baseline")
    if baseline is not None:
        lines.append(f"majority baseline {baseline['accuracy']:.3f} (always answering {baseline['answer']!r}, the most "
                     "common gold of these examples)")
    from_malformed = metrics.get("correct_malformed_rate", 0.0)
    if from_malformed > 0:
        lines.append(f"WARNING: {from_malformed:.3f} of the {metrics['accuracy']:.3f} accuracy comes from malformed "
                     "replies (no well-formed think and answer blocks; the answer was recovered from the text): the "
                     "model has not learnt the reply format")
    cut_off = metrics.get("budget_hit_rate", 0.0)
    if cut_off > 0:
        lines.append(f"WARNING: {cut_off:.3f} of the replies ran out of the generation budget (--max_new_tokens) "
                     "before they ended: an <answer> cut off there scores as malformed; raise the budget if the "
                     "model's replies are longer")
    for category, m in metrics.get("by_category", {}).items():
        lines.append(f"  {category}: accuracy {m['accuracy']:.3f}  malformed {m['malformed_rate']:.3f}  n={m['num_examples']}")
    return "\n".join(lines)


def _warn(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def run_eval(cfg: EvalConfig) -> dict:
    """Load the model and dataset named in ``cfg``, evaluate, write ``predictions.jsonl`` and ``metrics.json``."""
    import torch

    from ..model_loading import load_model, resolve_device, resolve_dtype
    from ..processors import load_processor
    from ..run_guard import check_local_path, check_output_dir, check_output_writable, move_previous_run_aside

    output_dir = Path(cfg.output_dir)
    check_output_dir(output_dir, eval_run(), cfg.overwrite_output_dir)  # before the (slow) model load
    check_local_path(cfg.model_name_or_path, "model")
    device = resolve_device(cfg.device)  # a device this machine lacks is found before anything loads
    resolve_dtype(cfg.dtype)  # and a dtype name that does not exist
    check_output_writable(output_dir)  # before the model load and generation, not when the results are written
    torch.manual_seed(cfg.seed)
    tags = cfg.tags
    examples = load_eval_dataset(
        cfg.dataset_name, cfg.dataset_test_split, adapter=cfg.adapter, image_only=cfg.image_only, limit=cfg.limit,
        columns=cfg.columns, tags=tags, builtin_size=cfg.builtin_size, seed=cfg.seed, answer_format=cfg.answer_format,
    )
    if not examples:
        raise ValueError(f"{cfg.dataset_name}: no examples to evaluate (split {cfg.dataset_test_split!r}, image_only={cfg.image_only})")
    prompt_check = check_prompts(  # before the (slow) model load
        cfg.model_name_or_path, [e.prompt for e in examples], f"{cfg.dataset_name} split {cfg.dataset_test_split!r}, "
        f"--adapter {cfg.adapter}", "eval", cfg.allow_prompt_mismatch, tags, say=_warn)
    model = load_model(cfg.model_name_or_path, trust_remote_code=cfg.trust_remote_code, dtype=cfg.dtype,
                       device=device)
    processor = load_processor(cfg.model_name_or_path, trust_remote_code=cfg.trust_remote_code)
    metrics, predictions = evaluate_model(
        model, processor, examples, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, tags=tags,
        progress=cfg.progress,
    )
    metrics["majority_baseline"] = majority_baseline([e.gold for e in examples], [e.gold for e in examples])
    metrics["prompt_check"] = prompt_check
    metrics["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("overwrite_output_dir", "progress")}
    move_previous_run_aside(output_dir, eval_run(), cfg.overwrite_output_dir)  # just before writing: never a mix
    write_results(output_dir, metrics, predictions, overwrite=cfg.overwrite_output_dir)
    return metrics
