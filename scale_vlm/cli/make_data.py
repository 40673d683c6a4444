"""``scale-vlm make-data``: write the built-in benchmark to disk.

Formats: ``messages`` (TRL messages JSONL + PNG images), ``sharegpt`` (ShareGPT/LLaVA ``conversations`` JSON +
PNG images) or ``hf`` (``datasets`` ``save_to_disk`` folder with ``train``/``test`` splits and all columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..bench.dataset import BenchConfig, make_benchmark, write_messages_jsonl, write_sharegpt_json
from ..run_guard import RunFiles, check_output_dir, move_previous_run_aside

FORMATS = ("messages", "sharegpt", "hf")
SPLITS = ("train", "test")
# What a run writes into output_dir, in any format (run_guard's one output-folder rule): the splits as JSONL or JSON
# files, their images/, or the splits' save_to_disk folders.
MAKE_DATA_RUN = RunFiles("make-data", markers=(*(f"{s}.jsonl" for s in SPLITS), *(f"{s}.json" for s in SPLITS),
                                               "images", *SPLITS))
# Help of the benchmark options (BenchConfig documents them in comments, which argparse cannot show).
BENCH_HELP = {
    "seed": "seed of the generated scenes, questions and traces",
    "num_examples": "training examples to write (the 'train' split)",
    "split": "random stream of the first split ('train' and 'test' never share one)",
    "task_mix": "task families and weights, family:weight comma separated (count, attribute, spatial, compare)",
    "trace_verbosity": "reasoning length: 0 terse, 1 + restated goal and a re-check, 2 + cell-by-cell pass",
    "trace_repeat": "extra passes of scan + task steps in each trace (0-8): finer reasoning length",
    "trace_entropy": "trace wording: 0 templated, 1 paraphrased + an observation or self-check, 2 + more "
                     "observations, self-checks and hedges (scenes, questions and answers unchanged)",
    "trace_seed": "seed of the trace wording only (trace_entropy > 0): same items, other wordings",
    "trace_style": "task steps: 'lookup' (cells named at once) or 'walkthrough' (object by object)",
    "scan_order": "scanned objects as 'top left red circle' (cell_first) or 'red circle at top left' (object_first)",
    "teacher_error_rate": "fraction of traces with one wrong, answer-irrelevant detail",
    "option_letter_fraction": "fraction of questions answered by an option letter",
    "max_objects": "most objects per scene (2-9, on a 3x3 grid)",
    "jitter": "pixels of random shift per shape (0: patch-aligned)",
    "size_jitter": "pixels of random size change per shape",
}


@dataclass
class MakeDataArgs:
    output_dir: str = field(default="data/builtin", metadata={"help": "folder to write"})
    format: str = field(default="messages", metadata={"help": f"one of {FORMATS}"})
    num_test: int = field(default=300, metadata={"help": "held-out questions (a 'test' split next to 'train')"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh in an output_dir holding a previous run: its files are moved into "
                "output_dir/previous-run-<time>/ (never deleted)"})


def main(argv: list[str]) -> int:
    from .common import parse

    parser = TrlParser((MakeDataArgs, BenchConfig), prog="scale-vlm make-data")
    for action in parser._actions:
        if not action.help and action.dest in BENCH_HELP:
            action.help = BENCH_HELP[action.dest]  # the parser appends the default
    args, bench = parse(parser, argv)
    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {args.format!r}")
    out = Path(args.output_dir)
    check_output_dir(out, MAKE_DATA_RUN, args.overwrite_output_dir)
    move_previous_run_aside(out, MAKE_DATA_RUN, args.overwrite_output_dir)
    splits = {"train": make_benchmark(bench)}
    if args.num_test > 0:
        test_cfg = BenchConfig(**{**vars(bench), "split": "test", "num_examples": args.num_test})
        splits["test"] = make_benchmark(test_cfg)
    for name, ds in splits.items():
        if args.format == "messages":
            path = write_messages_jsonl(ds, out, filename=f"{name}.jsonl")
        elif args.format == "sharegpt":
            path = write_sharegpt_json(ds, out, filename=f"{name}.json")
        else:
            path = out / name
            ds.save_to_disk(str(path))
        print(f"{name}: {len(ds)} examples -> {path}")
    return 0
