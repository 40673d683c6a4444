"""``scale-vlm build-base``: rebuild the tiny base VLM of the embedded default (seeded, deterministic).

By default it writes to the package's shipped folder (``scale_vlm/assets/tiny-base``), as fp16 safetensors, and
reports perception on held-out images (``perception.json`` next to the weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..tiny.base_stage import BaseStageConfig, train_base
from ..tiny.perception import perception_report
from ..tiny.shipped import SHIPPED_BASE, load_base, save_base


@dataclass
class BuildBaseArgs:
    output_dir: str = field(default="", metadata={"help": "where to save (default: the package's shipped folder)"})
    eval_images: int = field(default=200, metadata={"help": "held-out images for the perception report"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace an existing model there"})
    eval_only: bool = field(default=False, metadata={"help": "only report the perception of the model already there"})


def main(argv: list[str]) -> int:
    from .common import parse

    args, cfg = parse(TrlParser((BuildBaseArgs, BaseStageConfig), prog="scale-vlm build-base"), argv)
    out = Path(args.output_dir) if args.output_dir else SHIPPED_BASE
    if args.eval_only:
        model, processor = load_base(out)
        print(json.dumps(perception_report(model, processor, n=args.eval_images), indent=1))
        return 0
    if (out / "model.safetensors").exists() and not args.overwrite_output_dir:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite_output_dir to rebuild it")
    model, processor, info = train_base(cfg)
    save_base(model, processor, out)
    model, processor = load_base(out)  # report on exactly what was saved (fp16 round trip)
    report = perception_report(model, processor, n=args.eval_images)
    info["perception"] = report
    info.pop("log")
    (out / "perception.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"base stage: {info['train_seconds']} s training, {info['prep_seconds']} s data; saved to {out}")
    return 0
