"""Run a few SCALe optimizer steps and dump, per rank, the loss and the full gradient of every step.

Used by ``test_distributed.py``, once under ``accelerate launch`` with 2 CPU processes (gloo) and once as a single
process over the same global batch. Usage:

    python tests/dist_check.py --model DIR --data FILE.jsonl --out DIR --normalization sample|batch \
        --per_device_batch 2 [--grad_accum 1] [--steps 2] [--loss_impl fused|plain] [--zero_stage 2|3] \
        [--adaptive_tolerance TOL]

``--zero_stage`` trains under DeepSpeed with the shipped ``ds_zero{2,3}.json`` (its CPU accelerator, launched
with ``torch.distributed.run``), best with ``--optim sgd --lr 1.0``: ZeRO keeps gradients in its own partitioned
buffers, so the check compares the parameters after training instead (``OUT/rank{r}_params.npy``, gathered under
ZeRO-3, written for every run).

``--adaptive_tolerance`` trains with ``progress_mode="adaptive"`` (EMA 0.5, window 1, ramp 0.5, floor delay 0.8) and
adds each step's ``schedule_progress`` and the final ``AdaptiveState`` (``adaptive``) to the record.

Writes ``OUT/rank{r}.json`` (per-step logged loss, loss_think, loss_answer, w_think, w_answer, grad norm) and
``OUT/rank{r}_step{s}.npy`` (the flattened gradient, after the all-reduce, before the optimizer step).
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--loss_impl", default="fused")
    parser.add_argument("--zero_stage", type=int, default=0)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--untie_head", action="store_true", help="give lm_head its own copy of the embedding")
    parser.add_argument("--adaptive_tolerance", type=float, default=None, help="progress_mode adaptive")
    args = parser.parse_args()

    torch.set_num_threads(1)
    from transformers import TrainerCallback

    from scale_vlm.data.prepare import load_training_dataset
    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    if args.zero_stage:
        import deepspeed.comm.torch

        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce (minutes of C++ build); it only
        # speeds up communication, gloo does the same reductions.
        deepspeed.comm.torch.build_shm_op = lambda: None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load_base(args.model)
    if args.untie_head:
        untie_head(model)
    dataset, image_root = load_training_dataset(args.data)
    config = ScaleSFTConfig(
        output_dir=str(out / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, optim=args.optim,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: the dumped gradient is the raw one
        normalization=args.normalization, loss_impl=args.loss_impl, image_root=image_root, seed=0, data_seed=0,
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_nan_inf_filter=False,
        dataloader_num_workers=0, ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        deepspeed=zero_config(args.zero_stage) if args.zero_stage else None,
        **({} if args.adaptive_tolerance is None else dict(
            progress_mode="adaptive", adaptive_ema=0.5, adaptive_window=1, adaptive_tolerance=args.adaptive_tolerance,
            adaptive_ramp=0.5, adaptive_floor_delay=0.8)),
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
        "steps": [{k: h[k] for k in ("step", "loss", "loss_think", "loss_answer", "w_think", "w_answer",
                                     "schedule_progress") if k in h} for h in steps],
        "grad_norms": [float(np.linalg.norm(g)) for g in grads],
    }
    if args.adaptive_tolerance is not None:
        from scale_vlm.adaptive_schedule import adaptive_callback

        record["adaptive"] = adaptive_callback(trainer).progress_state.to_dict()
    for i, g in enumerate(grads):
        np.save(out / f"rank{rank}_step{i + 1}.npy", g, allow_pickle=False)
    np.save(out / f"rank{rank}_params.npy", full_parameters(model, args.zero_stage), allow_pickle=False)
    (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))


def untie_head(model) -> None:
    # An untied head is a parameter of its own, which ZeRO-3 and FSDP shard separately from the embedding.
    for config in (model.config, model.config.get_text_config()):
        config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    assert model.lm_head.weight is not model.get_input_embeddings().weight


def zero_config(stage: int) -> dict:
    """The shipped DeepSpeed config (``scale_vlm/configs/accelerate/ds_zero{stage}.json``, "auto" values filled in
    by transformers from the training arguments)."""
    path = Path(__file__).resolve().parent.parent / "scale_vlm" / "configs" / "accelerate" / f"ds_zero{stage}.json"
    return json.loads(path.read_text())


def full_parameters(model, zero_stage: int) -> np.ndarray:
    """Every parameter after training, flattened in ``model.parameters()`` order (gathered under ZeRO-3)."""
    params = list(model.parameters())
    if zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params)
    else:
        gather = contextlib.nullcontext()
    with gather:
        return torch.cat([p.detach().double().flatten() for p in params]).numpy()


if __name__ == "__main__":
    main()
    from reliability_support import end_distributed_worker

    end_distributed_worker(0)
