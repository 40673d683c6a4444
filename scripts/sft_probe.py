"""One demo SFT run (one method) evaluated on the held-out questions at chosen steps: how accuracy moves with
the step budget, from any base model.

    python scripts/sft_probe.py --method vanilla --max_steps 480 --eval_steps 240 480 --output_dir runs/probe \
        [--base_model DIR] [any demo option as JSON: --demo '{"trace_verbosity": 0}']

Uses the demo's data and options (``scale_vlm.demo.DemoConfig``) and the shared SFT recipe and evaluation
(``scale_vlm.drivers``); prints one JSON line per evaluation and writes ``preds_<step>.jsonl`` (readable by
``scripts/trace_diagnostics.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import TrainerCallback

from scale_vlm import demo
from scale_vlm.bench.dataset import make_benchmark, to_training_format
from scale_vlm.drivers import evaluate, prepare_sft_rows, sft_args, train_sft
from scale_vlm.eval.adapters import builtin_examples
from scale_vlm.processors import load_processor
from scale_vlm.tiny.shipped import SHIPPED_BASE


class EvalAtSteps(TrainerCallback):
    def __init__(self, steps, examples, processor, out: Path):
        self.steps, self.examples, self.processor, self.out = set(steps), examples, processor, out

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in self.steps:
            return
        metrics, preds = evaluate(model, self.processor, self.examples, batch_size=50, max_new_tokens=200,
                                  progress=False)
        model.train()
        with open(self.out / f"preds_{state.global_step}.jsonl", "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in preds)
        by_cat = {k: round(v["accuracy"], 3) for k, v in metrics.get("by_category", {}).items()}
        print(json.dumps({"step": state.global_step, "accuracy": metrics["accuracy"],
                          "malformed_rate": metrics["malformed_rate"], "by_category": by_cat}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=demo.METHODS, default="vanilla")
    ap.add_argument("--max_steps", type=int, default=240)
    ap.add_argument("--eval_steps", type=int, nargs="+", default=[240])
    ap.add_argument("--base_model", default=str(SHIPPED_BASE))
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--demo", default="{}", help="other DemoConfig fields as JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo.DemoConfig(output_dir=str(out), max_steps=a.max_steps, progress=False, **json.loads(a.demo))
    train = make_benchmark(cfg.bench(cfg.seed, "train", cfg.num_train))
    test = make_benchmark(cfg.bench(cfg.seed, "test", cfg.num_test))
    base = Path(a.base_model)
    data = prepare_sft_rows(to_training_format(train), base)
    callback = EvalAtSteps(a.eval_steps, builtin_examples(test), load_processor(str(base)), out)
    args = sft_args(out / a.method, a.method, cfg.schedule_kwargs(), steps=cfg.max_steps, batch_size=cfg.batch_size,
                    learning_rate=cfg.learning_rate, seed=cfg.seed, progress=cfg.progress,
                    freeze_vision_tower=cfg.freeze_vision_tower)
    train_sft(base, args, data, callbacks=[callback])


if __name__ == "__main__":
    main()
