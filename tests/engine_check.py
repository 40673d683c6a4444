"""One optimizer step of the SCALe loss under a distributed engine, checked against one process over the same batch.

Launched by ``test_engines.py`` with 2 CPU processes on gloo (``torch.distributed.run``). For each variant it
builds a tiny Qwen2-VL (tied or untied head), computes the reference on a copy in this process without any engine
(the plain path, ``F.cross_entropy`` on full logits, over the whole global batch), wraps the model the way the
engine's launcher would, runs one step of plain SGD at learning rate 1 (so ``parameter before - parameter after``
is the gradient, which sharded engines never show in full) and compares on every rank. Usage:

    python -m torch.distributed.run --nproc_per_node 2 tests/engine_check.py --engine ENGINE --out FILE.json \
        --variants '[{"tied": false, "impl": "fused", "normalization": "sample"}, ...]'

ENGINE: ddp | zero2 | zero3 | fsdp1 | fsdp1_head (lm_head its own FSDP unit) | fsdp2 (as accelerate prepares
it: layers, then [embed,] lm_head as one unit, then the root). Variant keys: tied, impl (fused | plain),
normalization (sample | batch), method (scale | vanilla), lora, ckpt (activation checkpointing: true for the
model's own, "wrapper" for FSDP's checkpoint_wrapper), accum (micro-batches per rank). Rank 0 writes
``[{engine, variant, rank, loss, ref_loss, max_abs_diff, max_ref, head_grad, fused_fallback} or {..., error}]``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import traceback

import torch
import torch.distributed as dist
from reliability_support import end_distributed_worker

LR = 1.0
# The global batch: 4 examples whose think AND answer lengths differ, so a normaliser counted per rank or per
# micro-batch instead of over the whole step gives a different loss ("sample" and "batch" differ too).
PROMPT, THINK, ANSWER, T = 4, (3, 6, 9, 14), (1, 4, 2, 5), 26


def tiny_model(tied: bool):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tied,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    config = Qwen2VLConfig(text_config=text, vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2,
                                                                 patch_size=4, temporal_patch_size=1),
                           bos_token_id=0, eos_token_id=1, pad_token_id=0, image_token_id=90, video_token_id=91,
                           vision_start_token_id=92, vision_end_token_id=93,
                           tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).float()
    with torch.no_grad():  # larger than the default init so the gradients are well above fp32 noise
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.tie_weights()
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    return model


def global_batch():
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_THINK

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 88, (len(THINK), T), generator=g)
    seg = torch.zeros_like(ids)
    attn = torch.zeros_like(ids)
    for b, (t, a) in enumerate(zip(THINK, ANSWER)):
        seg[b, PROMPT:PROMPT + t] = SEGMENT_THINK
        seg[b, PROMPT + t:PROMPT + t + a] = SEGMENT_ANSWER
        attn[b, :PROMPT + t + a] = 1  # right padding after the answer
    labels = torch.where(seg > 0, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}, seg


def loss_of(model, batch, seg, variant, counts):
    """The micro-batch loss as ScaleSFTTrainer.compute_loss computes it (before the world-size factor)."""
    from scale_vlm.fused_loss import fused_segment_loss
    from scale_vlm.loss import per_token_nll, scale_loss, vanilla_loss

    seg = seg[:, 1:]  # [B, T-1], aligned with the next-token labels
    method, norm = variant.get("method", "scale"), variant.get("normalization", "sample")
    if variant.get("impl", "fused") == "fused":
        return fused_segment_loss(model, dict(batch), seg, method, 0.7, 0.3, norm, counts)[0].loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    nll = per_token_nll(model(**inputs, use_cache=False).logits, batch["labels"])  # [B, T-1]
    if method == "scale":
        return scale_loss(nll, seg, 0.7, 0.3, norm, counts).loss
    return vanilla_loss(nll, seg, counts).loss


def prepare(variant):
    model = tiny_model(variant["tied"])
    if variant.get("ckpt") == "wrapper":
        # FSDP's own activation checkpointing, as accelerate applies it (fsdp_activation_checkpointing): each
        # block in a non-reentrant checkpoint_wrapper before sharding
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            CheckpointImpl,
            apply_activation_checkpointing,
            checkpoint_wrapper,
        )

        blocks = tuple({type(m) for m in model.modules() if type(m).__name__ in model._no_split_modules})
        apply_activation_checkpointing(
            model,
            checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
            check_fn=lambda m: isinstance(m, blocks))
    elif variant.get("ckpt"):
        # the model's own (transformers' activation_checkpointing / gradient_checkpointing training argument)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if variant.get("lora"):
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights="gaussian"))
        with torch.no_grad():  # LoRA B starts at 0; give both factors a gradient
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.2)
    model.train()
    return model


def install_fused_head(model):
    from scale_vlm.fused_loss import add_fused_lm_head

    # as ScaleSFTTrainer does, after PEFT
    add_fused_lm_head(model.get_base_model() if hasattr(model, "get_base_model") else model)


def reference(model, variant):
    """Loss and gradient of the whole global batch in this process, no engine, plain path."""
    from scale_vlm.loss import SegmentCounts

    ref = copy.deepcopy(model)
    batch, seg = global_batch()
    loss = loss_of(ref, batch, seg, {**variant, "impl": "plain"}, SegmentCounts.from_batch(seg[:, 1:]))
    loss.backward()
    # the vision tower sees no image in this text-only batch: no gradient, no update
    grads = {clean(n): torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
             for n, p in ref.named_parameters() if p.requires_grad}
    return loss.item(), grads


def clean(name: str) -> str:
    # wrapper prefixes: FSDP1 units, checkpoint wrappers, DDP / DeepSpeed's ``module.``
    name = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
    return name[len("module."):] if name.startswith("module.") else name


def wrap(engine, model, variant, world):
    """The engine's model and an optimizer step function; ``backward(loss)`` for one micro-batch."""
    accum = variant.get("accum", 1)
    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, find_unused_parameters=True)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
        return ddp, (lambda loss: loss.backward()), opt.step
    if engine in ("zero2", "zero3"):
        import deepspeed
        import deepspeed.comm.torch

        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce (minutes of C++ build); it only
        # speeds up communication, gloo does the same reductions.
        deepspeed.comm.torch.build_shm_op = lambda: None
        config = {
            "train_micro_batch_size_per_gpu": len(THINK) // world // accum, "gradient_accumulation_steps": accum,
            "train_batch_size": len(THINK), "zero_optimization": {
                # ZeRO-3 keeps parameters under 1e5 elements whole by default: all of this tiny model's
                "stage": int(engine[-1]), "stage3_param_persistence_threshold": 0},
            "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0, "steps_per_print": 10 ** 9,
        }
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
        ds, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=config)
        # As transformers' Trainer under DeepSpeed: the loss is already normalised over the step.
        return ds, (lambda loss: (ds.backward(loss, scale_wrt_gas=False), ds.step())), (lambda: None)
    if engine in ("fsdp1", "fsdp1_head"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLDecoderLayer, Qwen2VLVisionBlock

        head = model.get_output_embeddings()
        layers = (Qwen2VLDecoderLayer, Qwen2VLVisionBlock)
        # accelerate's transformer_based_wrap policy (the model's _no_split_modules), plus the head for fsdp1_head
        policy = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: isinstance(m, layers) or (
            engine == "fsdp1_head" and m is head))
        fsdp = FSDP(model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"))
        opt = torch.optim.SGD([p for p in fsdp.parameters() if p.requires_grad], lr=LR)
        return fsdp, (lambda loss: loss.backward()), opt.step
    if engine == "fsdp2":
        fsdp2_prepare(model)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
        return model, (lambda loss: loss.backward()), opt.step
    raise ValueError(engine)


def fsdp2_prepare(model):
    """accelerate 1.15's ``fsdp2_prepare_model`` (transformer_based_wrap, no mixed precision, no offload), which
    refuses to run on CPU: each decoder/vision block, then the tail unit [embed (if tied), lm_head], then root."""
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(base._no_split_modules)
    for module in reversed(list(model.modules())):  # children first, as accelerate's get_module_children_bottom_up
        inner = getattr(module, "_checkpoint_wrapped_module", module)
        if type(inner).__name__ in names:
            fully_shard(module)
    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    tied = embed.weight is head.weight
    if not tied:
        fully_shard(embed)
    fully_shard([embed, head] if tied else [head], reshard_after_forward=False)
    fully_shard(model)


def gathered(engine, wrapped):
    """Full parameters after the step, by cleaned name (trainable ones)."""
    if engine == "zero3":
        import deepspeed

        params = list(wrapped.module.parameters())
        with deepspeed.zero.GatheredParameters(params):
            return {clean(n): p.detach().clone() for n, p in wrapped.module.named_parameters() if p.requires_grad}
    if engine in ("fsdp1", "fsdp1_head"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(wrapped):
            return {clean(n): p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    module = wrapped.module if engine in ("ddp", "zero2") else wrapped
    out = {}
    for n, p in module.named_parameters():
        if p.requires_grad:
            p = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[clean(n)] = p.detach().clone()
    return out


def run_variant(engine, variant, rank, world):
    from scale_vlm.loss import SegmentCounts

    model = prepare(variant)
    before = {clean(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ref_loss, ref_grads = reference(model, variant)
    install_fused_head(model)
    wrapped, backward, step = wrap(engine, model, variant, world)
    batch, seg = global_batch()
    counts = SegmentCounts.from_batch(seg[:, 1:])  # the step's global normalisers, as the trainer all-reduces them
    rows = torch.arange(len(THINK)).chunk(world)[rank]
    local = 0.0
    for micro in rows.chunk(variant.get("accum", 1)):
        loss = loss_of(wrapped, {k: v[micro] for k, v in batch.items()}, seg[micro], variant, counts)
        local += loss.item()
        backward(loss * world)  # the engines average gradients over ranks; our normalisers span all ranks
    step()
    total = torch.tensor([local], dtype=torch.float64)
    dist.all_reduce(total)
    after = gathered(engine, wrapped)
    assert after.keys() == ref_grads.keys(), sorted(set(after) ^ set(ref_grads))[:6]
    diff = max(((before[n] - after[n]) / LR - ref_grads[n]).abs().max().item() for n in ref_grads)
    max_ref = max(g.abs().max().item() for g in ref_grads.values())
    head = [g for n, g in ref_grads.items() if n.endswith("lm_head.weight") or n.endswith("embed_tokens.weight")]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"loss": total.item(), "ref_loss": ref_loss, "max_abs_diff": diff, "max_ref": max_ref,
            # the fused head ran (it falls back to the model's own logits, exact too, for heads it cannot run)
            "fused_fallback": bool(getattr(base, "_fused_fallback_warned", False)),
            "head_grad": max((g.abs().max().item() for g in head), default=0.0)}


def import_before_process_group(engine: str) -> None:
    """Import what the check uses before the process group exists: ``torch._dynamo`` (pulled in by transformers,
    DDP's constructor, FSDP) keeps references to the default group when first imported after it, and the group
    then outlives ``destroy_process_group`` (see ``reliability_support.end_distributed_worker``)."""
    import peft  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import torch.nn.parallel  # noqa: F401
    import transformers.models.qwen2_vl.modeling_qwen2_vl  # noqa: F401

    import scale_vlm.fused_loss  # noqa: F401

    if engine.startswith("zero"):
        import deepspeed  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--exit_status_of_rank1", type=int, default=0,
                        help="rank 1 ends with this status after the check (to test that a failing worker fails)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import_before_process_group(args.engine)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = []
    for variant in json.loads(args.variants):
        try:
            res = run_variant(args.engine, variant, rank, world)
        except Exception as err:  # recorded per variant; the test reports it
            res = {"error": f"{type(err).__name__}: {err}\n{traceback.format_exc()[-3000:]}"}
        results.append({"engine": args.engine, "variant": variant, "rank": rank, **res})
        dist.barrier()
    gathered_results = [None] * world
    dist.all_gather_object(gathered_results, results)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump([r for per_rank in gathered_results for r in per_rank], f, indent=1)
    end_distributed_worker(args.exit_status_of_rank1 if rank == 1 else 0)


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
