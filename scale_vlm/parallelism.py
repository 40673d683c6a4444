"""Which distributed setups the segment loss is exact under: data parallelism only (a start-up check)."""

from __future__ import annotations


def check_data_parallel_only(trainer) -> None:
    """Raise at start-up if ``trainer`` runs under tensor, context or sequence parallelism (or Megatron-LM).

    The segment loss is exact under data parallelism only (DDP, DeepSpeed ZeRO, FSDP/HSDP): the step's normalisers
    are all-reduced over *every* process and the loss is multiplied by the process count to undo the engines'
    gradient average, both of which assume each process holds its own examples and the whole sequence. Under
    TP/CP/SP processes share examples or split sequences, and the loss would be silently wrong.
    """
    from accelerate.utils import DistributedType

    sizes = {
        "tensor": trainer.get_tp_size(),  # model._tp_size (from_pretrained tp_plan), DeepSpeed AutoTP, accelerate
        "context": trainer.get_cp_size(),  # accelerate ParallelismConfig cp_size
        "sequence": trainer.get_sp_size(),  # accelerate ParallelismConfig sp_size (DeepSpeed ALST/Ulysses)
    }
    if getattr(trainer, "is_deepspeed_enabled", False):
        ds_config = trainer.accelerator.state.deepspeed_plugin.hf_ds_config.config
        sizes["DeepSpeed sequence"] = ds_config.get("sequence_parallel_size", 1)
    if getattr(trainer.accelerator, "distributed_type", None) == DistributedType.MEGATRON_LM:
        sizes["Megatron-LM model"] = 2
    bad = {name: size for name, size in sizes.items() if isinstance(size, int) and size > 1}
    if bad:
        found = ", ".join(f"{name} parallel size {size}" for name, size in bad.items())
        raise ValueError(
            f"scale-vlm's segment loss supports data parallelism only (DDP, DeepSpeed ZeRO, FSDP); found {found}. "
            "Its normalisers are summed over every process, which assumes each process trains on its own examples "
            "and whole sequences. Use DDP, ZeRO or FSDP (see docs/scaling.md)."
        )
