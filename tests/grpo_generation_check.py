"""Run one GRPO generation step (TRL's own generation path, through ``ScaleGRPOTrainer``) and dump each rank's
sampled completions.

Used by ``test_distributed.py`` with 2 CPU processes on gloo (``torch.distributed.run``): ``--engine none`` with the
plain model, ``--engine fsdp2`` with the model sharded by ``fully_shard`` as accelerate applies it (accelerate
refuses FSDP on CPU, so the trainer is built on the plain model and its model is sharded in place afterwards, as
accelerate's ``prepare`` would leave it). FSDP2 gathers whole parameters for each forward, so both engines compute
the same logits and, with the same seed, sample the same completions. Usage:

    python -m torch.distributed.run --nproc_per_node 2 tests/grpo_generation_check.py --model DIR --out DIR \
        --engine none|fsdp2 [--lora]

Writes ``OUT/rank{r}.json``: ``{world_size, rank, completion_ids}``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from reliability_support import end_distributed_worker, noise_weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--engine", default="none")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters on the decoder's projections")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from engine_check import fsdp2_prepare, import_before_process_group

    import_before_process_group(args.engine)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()

    from scale_vlm.grpo_config import ScaleGRPOConfig
    from scale_vlm.grpo_trainer import ScaleGRPOTrainer, load_grpo_dataset
    from scale_vlm.tiny.shipped import load_base

    model, processor = load_base(args.model)
    noise_weights(model)  # the samples then follow the model, not only the random numbers
    if args.lora:
        from peft import LoraConfig, get_peft_model

        # init_lora_weights=False: non-zero adapters, so the adapters really take part in the samples; drawn from the
        # same seed on every rank, as a LoRA run's saved adapter is the same on every rank
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    dataset = load_grpo_dataset("builtin", "train", builtin_size=4)
    config = ScaleGRPOConfig(output_dir=str(Path(args.out) / "trainer"), max_steps=1, per_device_train_batch_size=2,
                             num_generations=2, max_completion_length=8, use_cpu=True, disable_tqdm=True, seed=0,
                             report_to=[])
    trainer = ScaleGRPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor)
    if args.engine == "fsdp2":
        fsdp2_prepare(model)
        trainer.model_wrapped = model
    elif args.engine != "none":
        raise ValueError(f"unknown engine {args.engine!r}")
    # each rank's prompt, twice (a group of 2): the two ranks generate for different images
    batch = [dataset[rank]] * 2
    torch.manual_seed(1 + rank)
    output = trainer._generate_and_score_completions(batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"world_size": int(os.environ["WORLD_SIZE"]), "rank": rank,
              "completion_ids": output["completion_ids"].tolist()}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    end_distributed_worker()


if __name__ == "__main__":
    main()
