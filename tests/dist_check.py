"""Run a few SCALe optimizer steps and dump, per rank, the loss and the full gradient of every step.

Used by ``test_distributed.py``, once under ``accelerate launch`` with 2 CPU processes (gloo) and once as a single
process over the same global batch. Usage:

    python tests/dist_check.py --model DIR --data FILE.jsonl --out DIR --normalization sample|batch \
        --per_device_batch 2 [--grad_accum 1] [--steps 2]

Writes ``OUT/rank{r}.json`` (per-step logged loss, loss_think, loss_answer, w_think, w_answer, grad norm) and
``OUT/rank{r}_step{s}.npy`` (the flattened gradient, after the all-reduce, before the optimizer step).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--normalization", default="sample")
    parser.add_argument("--per_device_batch", type=int, default=2)
    parser.add_argument("--grad_accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    from transformers import TrainerCallback

    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.model import load_tiny

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load_tiny(args.model)
    dataset, image_root = load_training_dataset(args.data)
    config = ScaleSFTConfig(
        output_dir=str(out / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=5e-3, lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: the dumped gradient is the raw one
        normalization=args.normalization, loss_impl="plain", image_root=image_root, seed=0, data_seed=0,
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_nan_inf_filter=False,
        dataloader_num_workers=0, ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    grads: list[np.ndarray] = []

    class DumpGrad(TrainerCallback):
        def on_pre_optimizer_step(self, args_, state, control, **kw):
            flat = [p.grad.detach().double().flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=torch.float64)
                    for p in model.parameters()]
            grads.append(torch.cat(flat).numpy())

    trainer = ScaleSFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor,
                              callbacks=[DumpGrad()])
    trainer.train()
    rank = trainer.args.process_index
    steps = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    record = {
        "world_size": trainer.args.world_size,
        "steps": [{k: h[k] for k in ("step", "loss", "loss_think", "loss_answer", "w_think", "w_answer")} for h in steps],
        "grad_norms": [float(np.linalg.norm(g)) for g in grads],
    }
    for i, g in enumerate(grads):
        np.save(out / f"rank{rank}_step{i + 1}.npy", g, allow_pickle=False)
    (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
