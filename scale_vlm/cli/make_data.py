"""``scale-vlm make-data``: write the built-in benchmark to disk.

Formats: ``messages`` (TRL messages JSONL + PNG images), ``sharegpt`` (ShareGPT/LLaVA ``conversations`` JSON +
PNG images) or ``hf`` (``datasets`` ``save_to_disk`` folder with ``train``/``test`` splits and all columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..bench.dataset import BenchConfig, make_benchmark, write_messages_jsonl, write_sharegpt_json

FORMATS = ("messages", "sharegpt", "hf")


@dataclass
class MakeDataArgs:
    output_dir: str = field(default="data/builtin", metadata={"help": "folder to write"})
    format: str = field(default="messages", metadata={"help": f"one of {FORMATS}"})
    num_test: int = field(default=300, metadata={"help": "held-out questions (a 'test' split next to 'train')"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "write into a non-empty folder"})


def main(argv: list[str]) -> int:
    args, bench = TrlParser((MakeDataArgs, BenchConfig)).parse_args_and_config(args=argv)
    if args.format not in FORMATS:
        print(f"scale-vlm make-data: --format must be one of {FORMATS}")
        return 2
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite_output_dir:
        print(f"scale-vlm make-data: {out} is not empty; pass --overwrite_output_dir")
        return 1
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
