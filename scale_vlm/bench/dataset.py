"""The built-in benchmark as a ``datasets.Dataset``, its training view, and writers to disk.

Columns of ``make_benchmark``: ``id``, ``image`` (PIL), ``prompt`` (complete user text: question, options, reasoning
instruction), ``response`` (``<think>..</think><answer>..</answer>``), ``answer`` (gold short answer: an option
letter, a number or a word), ``choices`` (list, [] when free-form), ``category`` (task family), plus ``value``
(the answer as the trace concludes it), ``teacher_error`` (whether the trace holds a wrong detail) and ``scene``
(JSON of the objects).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..prompts import format_options, reasoning_instruction
from ..segments import DEFAULT_TAGS, Tags
from .prose import ENTROPY_LEVELS, Voice
from .scenes import render
from .tasks import (
    SCAN_ORDERS,
    TASK_FNS,
    TASKS,
    TRACE_STYLES,
    Item,
    corrupt_scene,
    write_trace,
)


@dataclass
class BenchConfig:
    """Knobs of the built-in benchmark. The defaults resemble cold-start CoT data (see docs/benchmark.md)."""

    seed: int = 0
    num_examples: int = 1000
    split: str = "train"  # part of every example's random stream: "train" and "test" never share a stream
    task_mix: str = "count:1,attribute:1,spatial:1,compare:1"  # family:weight, comma separated
    trace_verbosity: int = 1  # 0 terse (scan + steps), 1 + restated goal and a re-check scan, 2 + cell-by-cell pass
    trace_repeat: int = 0  # extra passes of scan + task steps: finer trace length on top of trace_verbosity
    trace_entropy: int = 0  # 0 templated; 1, 2: varied wording, observations, self-checks (bench/prose.py)
    trace_seed: int = 0  # seed of the wording stream only (trace_entropy > 0): same items, other wordings
    trace_style: str = "lookup"  # task steps: "lookup" (cells named at once) or "walkthrough" (object by object)
    scan_order: str = "cell_first"  # each scanned object as "top left red circle" or "red circle at top left"
    teacher_error_rate: float = 0.2  # fraction of traces with one wrong, answer-irrelevant detail
    option_letter_fraction: float = 0.8  # fraction of questions answered by an option letter
    max_objects: int = 4  # objects per scene (grid of 9 cells); 4 lets the tiny VLM learn the cell steps (docs)
    jitter: int = 0  # pixels of random shift per shape (0: patch-aligned)
    size_jitter: int = 0  # pixels of random size change per shape

    def weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.task_mix.split(","):
            part = part.strip()
            if not part:
                continue
            name, _, w = part.partition(":")
            name = name.strip()
            if name not in TASK_FNS:
                raise ValueError(f"unknown task family {name!r}; choose from {', '.join(TASKS)}")
            out[name] = float(w) if w else 1.0
        if not out or sum(out.values()) <= 0:
            raise ValueError(f"task_mix {self.task_mix!r} selects no task")
        return out

    def validate(self) -> None:
        if not 0 <= self.teacher_error_rate <= 1 or not 0 <= self.option_letter_fraction <= 1:
            raise ValueError("teacher_error_rate and option_letter_fraction must lie in [0, 1]")
        if self.trace_verbosity not in (0, 1, 2):
            raise ValueError("trace_verbosity must be 0, 1 or 2")
        if self.trace_entropy not in ENTROPY_LEVELS:
            raise ValueError(f"trace_entropy must be one of {', '.join(map(str, ENTROPY_LEVELS))}")
        if not 0 <= self.trace_repeat <= 8:
            raise ValueError("trace_repeat must lie in [0, 8]")
        if self.trace_style not in TRACE_STYLES:
            raise ValueError(f"trace_style must be one of {', '.join(TRACE_STYLES)}")
        if self.scan_order not in SCAN_ORDERS:
            raise ValueError(f"scan_order must be one of {', '.join(SCAN_ORDERS)}")
        if not 2 <= self.max_objects <= 9:
            raise ValueError("max_objects must lie in [2, 9]")
        self.weights()


def _rng(cfg: BenchConfig, index: int, stream: str) -> random.Random:
    return random.Random(f"scale-vlm-bench|{cfg.seed}|{cfg.split}|{index}|{stream}")


def make_prompt(item: Item, tags: Tags = DEFAULT_TAGS, instruction: str | None = None) -> str:
    """Question, options (or the answer form) and the instruction (the reasoning one unless given)."""
    if item.choices:
        middle = f"Options: {format_options(item.choices)}."
    elif item.category == "count":
        middle = "Answer with a number."
    else:
        middle = "Answer with a word or short phrase."
    return f"{item.question} {middle} {instruction or reasoning_instruction(tags)}"


def iter_items(cfg: BenchConfig, tags: Tags = DEFAULT_TAGS, voices: list | None = None) -> Iterator[dict]:
    """Examples without images (text, scene, answer); deterministic in ``cfg``. ``voices``, when given, collects
    each trace's ``Voice`` (its ``bits`` drawn)."""
    cfg.validate()
    weights = cfg.weights()
    names, ws = list(weights), list(weights.values())
    for i in range(cfg.num_examples):
        rng = _rng(cfg, i, "item")
        category = rng.choices(names, ws)[0]
        letters = rng.random() < cfg.option_letter_fraction
        item = TASK_FNS[category](rng, letters, cfg.max_objects)
        err_rng = _rng(cfg, i, "teacher")  # separate stream: the error knob never changes scenes or answers
        scanned = None
        if err_rng.random() < cfg.teacher_error_rate:
            scanned = corrupt_scene(item, err_rng)
        # separate stream too: the wording never changes scenes, answers or teacher errors; it is not drawn at all at
        # trace_entropy 0, so that level is the templated data exactly
        voice = Voice(cfg.trace_entropy, _rng(cfg, i, f"voice|{cfg.trace_seed}"), same_size=cfg.size_jitter == 0,
                      centred=cfg.jitter == 0)
        think = write_trace(item, cfg.trace_verbosity, scanned or item.scene, cfg.trace_style, cfg.scan_order,
                            cfg.trace_repeat, voice)
        if voices is not None:
            voices.append(voice)
        yield {
            "id": f"{cfg.split}-{cfg.seed}-{i:06d}",
            "prompt": make_prompt(item, tags),
            "response": tags.wrap(think, item.answer),
            "answer": item.answer,
            "choices": list(item.choices),
            "category": category,
            "value": item.value,
            "teacher_error": scanned is not None,
            "scene": json.dumps(item.scene.to_dict()),
            "_scene": item.scene,
        }


def make_benchmark(cfg: BenchConfig | None = None, tags: Tags = DEFAULT_TAGS):
    """The benchmark as a ``datasets.Dataset`` (columns in the module docstring)."""
    import datasets

    cfg = cfg or BenchConfig()
    rows = []
    for i, row in enumerate(iter_items(cfg, tags)):
        scene = row.pop("_scene")
        row["image"] = render(scene, _rng(cfg, i, "render"), jitter=cfg.jitter, size_jitter=cfg.size_jitter)
        rows.append(row)
    features = datasets.Features({
        "id": datasets.Value("string"), "prompt": datasets.Value("string"), "response": datasets.Value("string"),
        "answer": datasets.Value("string"), "choices": datasets.Sequence(datasets.Value("string")),
        "category": datasets.Value("string"), "value": datasets.Value("string"),
        "teacher_error": datasets.Value("bool"), "scene": datasets.Value("string"), "image": datasets.Image(),
    })
    cols = {k: [r[k] for r in rows] for k in features}
    return datasets.Dataset.from_dict(cols, features=features)


def training_messages(prompt: str, response: str) -> list[dict]:
    """TRL's conversational VLM format for one example."""
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": response}]},
    ]


def to_training_format(ds, keep_columns: bool = False):
    """Add TRL's ``messages`` / ``images`` columns (raw conversational VLM format). By default only those two
    columns are kept, which is what ``ScaleSFTTrainer`` / ``trl.SFTTrainer`` consume."""
    def add(batch):
        return {
            "messages": [training_messages(p, r) for p, r in zip(batch["prompt"], batch["response"])],
            "images": [[img] for img in batch["image"]],
        }

    remove = [] if keep_columns else list(ds.column_names)
    return ds.map(add, batched=True, remove_columns=remove, desc=None)


def _save_images(ds, out: Path) -> list[str]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for ex in ds:
        rel = f"images/{ex['id']}.png"
        ex["image"].save(out / rel)
        paths.append(rel)
    return paths


def _meta(ex) -> dict:
    return {"answer": ex["answer"], "choices": list(ex["choices"]), "category": ex["category"]}


def write_messages_jsonl(ds, out_dir: str | Path, filename: str = "data.jsonl") -> Path:
    """TRL messages JSONL: one line per example with ``messages`` and ``images`` (paths relative to the file),
    plus ``id``, ``answer``, ``choices``, ``category``. Images go to ``images/<id>.png``."""
    out = Path(out_dir)
    paths = _save_images(ds, out)
    path = out / filename
    with path.open("w") as f:
        for ex, rel in zip(ds, paths):
            row = {"id": ex["id"], "messages": training_messages(ex["prompt"], ex["response"]), "images": [rel], **_meta(ex)}
            f.write(json.dumps(row) + "\n")
    return path


def write_sharegpt_json(ds, out_dir: str | Path, filename: str = "data.json") -> Path:
    """ShareGPT / LLaVA JSON: a list of ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
    {"from": "gpt", "value": ...}]}`` with image paths relative to the file."""
    out = Path(out_dir)
    paths = _save_images(ds, out)
    records = []
    for ex, rel in zip(ds, paths):
        records.append({
            "id": ex["id"], "image": rel,
            "conversations": [{"from": "human", "value": "<image>\n" + ex["prompt"]}, {"from": "gpt", "value": ex["response"]}],
            **_meta(ex),
        })
    path = out / filename
    path.write_text(json.dumps(records, indent=1))
    return path


def build_benchmark(seed: int = 0, num_train: int = 2000, num_test: int = 300, **knobs):
    """``DatasetDict`` with disjoint-stream ``train`` and ``test`` splits (the evaluator's ``builtin`` dataset)."""
    import datasets

    return datasets.DatasetDict({
        split: make_benchmark(BenchConfig(seed=seed, num_examples=n, split=split, **knobs))
        for split, n in (("train", num_train), ("test", num_test))
    })
