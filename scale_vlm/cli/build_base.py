"""``scale-vlm build-base``: rebuild the tiny base VLM of the embedded default (seeded, deterministic).

By default it writes to the package's shipped folder (``scale_vlm/assets/tiny-base``), as fp16 safetensors, and
reports perception on held-out images (``perception.json`` next to the weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..run_guard import MODEL_FILES, RunFiles, check_output_dir, move_previous_run_aside
from ..tiny.base_stage import BaseStageConfig, train_base
from ..tiny.perception import perception_report
from ..tiny.shipped import SHIPPED_BASE, load_base, save_base

# What a build writes into output_dir (run_guard's one output-folder rule): the model and its perception report.
BUILD_BASE_RUN = RunFiles("build-base", markers=("model.safetensors", "perception.json"), companions=MODEL_FILES)


@dataclass
class BuildBaseArgs:
    output_dir: str = field(default="", metadata={"help": "where to save (default: the package's shipped folder)"})
    eval_images: int = field(default=200, metadata={"help": "held-out images for the perception report"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "rebuild in an output_dir holding a previous build: its files are moved into "
                "output_dir/previous-run-<time>/ (never deleted)"})
    eval_only: bool = field(default=False, metadata={"help": "only report the perception of the model already there"})


def main(argv: list[str]) -> int:
    from .common import parse

    args, cfg = parse(TrlParser((BuildBaseArgs, BaseStageConfig), prog="scale-vlm build-base"), argv)
    out = Path(args.output_dir) if args.output_dir else SHIPPED_BASE
    if args.eval_only:
        model, processor = load_base(out)
        print(json.dumps(perception_report(model, processor, n=args.eval_images), indent=1))
        return 0
    check_output_dir(out, BUILD_BASE_RUN, args.overwrite_output_dir)
    model, processor, info = train_base(cfg)
    # moved only now, after the training: an interrupted rebuild leaves the model there (the shipped one, by default)
    move_previous_run_aside(out, BUILD_BASE_RUN, args.overwrite_output_dir)
    save_base(model, processor, out)
    model, processor = load_base(out)  # report on exactly what was saved (fp16 round trip)
    report = perception_report(model, processor, n=args.eval_images)
    info["perception"] = report
    info.pop("log")
    (out / "perception.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"base stage: {info['train_seconds']} s training, {info['prep_seconds']} s data; saved to {out}")
    return 0
