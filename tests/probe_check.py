"""Run the GRPO greedy probe once and dump, per rank, its metrics, predictions and how much it generated.

Used by ``test_distributed.py``: once as one process, and with 2 CPU processes on gloo (``torch.distributed.run``)
with the model as the probe sees it under an engine (``none``: the plain model, as under DDP, where the trainer
hands callbacks the unwrapped model; ``zero3``: DeepSpeed ZeRO-3's partitioned module, whose every forward pass
needs both ranks; ``fsdp2``: ``fully_shard`` as accelerate applies it, where the images are encoded before the
root's first forward, so the root's own parameters must be gathered around generation). Every question is generated
alone (batch size 1), so a question's completion is the same whatever else a rank generates. Usage:

    python -m torch.distributed.run --nproc_per_node 2 tests/probe_check.py --model DIR --out DIR \
        --engine none|zero3|fsdp2 [--num_questions 5] [--max_new_tokens 12]

Writes ``OUT/rank{r}.json``: ``{world_size, rank, metrics, predictions, generated, lengths}`` (``generated``: the
completions this rank generated; ``lengths``: their new-token counts).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from reliability_support import end_distributed_worker, noise_weights

EOS = 18  # a token the noised tiny model writes at different steps of different questions (or never)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--engine", default="none")
    parser.add_argument("--num_questions", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from engine_check import import_before_process_group, wrap

    from scale_vlm.eval.adapters import load_eval_dataset
    from scale_vlm.grpo_trainer import GreedyProbe
    from scale_vlm.tiny.shipped import load_base

    import_before_process_group(args.engine)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    model, processor = load_base(args.model)
    # The tiny random model writes one token over and over whatever the question; noise on its weights (the same on
    # every rank) makes its completions differ by question, and an end-of-sequence token it writes early on some
    # questions and late or never on others makes ranks finish their questions at different steps (a sharded model
    # then needs the ranks kept in step).
    noise_weights(model)
    model.generation_config.eos_token_id = EOS
    if args.engine == "zero3":
        engine, _, _ = wrap("zero3", model, {}, world)
        model = engine.module
    elif args.engine == "fsdp2":
        from engine_check import fsdp2_prepare

        fsdp2_prepare(model)
    elif args.engine != "none":
        raise ValueError(f"unknown engine {args.engine!r}")
    lengths: list[int] = []
    generate = model.generate

    def counting_generate(*a, **kw):
        out = generate(*a, **kw)
        new = out[:, kw["input_ids"].shape[1]:]
        eos = model.generation_config.eos_token_id
        lengths.extend(int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else row.numel() for row in new)
        return out

    model.generate = counting_generate
    questions = load_eval_dataset("builtin", "test", builtin_size=args.num_questions)
    probe = GreedyProbe(questions, 1, processor=processor, batch_size=1, max_new_tokens=args.max_new_tokens)
    metrics, predictions = probe.evaluate(model, processor)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rank = torch.distributed.get_rank() if world > 1 else 0
    record = {"world_size": world, "rank": rank, "metrics": metrics,
              "predictions": predictions, "generated": len(lengths), "lengths": lengths}
    (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1, default=str))
    end_distributed_worker()


if __name__ == "__main__":
    main()
