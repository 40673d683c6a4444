"""The shipped accelerate launch configs parse with accelerate's own loader and launcher code, and point at the
shipped DeepSpeed JSON; the JSON is what ``tests/test_distributed.py`` trains with under ZeRO-2/3."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "scale_vlm" / "configs" / "accelerate"
REPO_ROOT = CONFIGS.parent.parent.parent


def _launch_env(name: str):
    """What ``accelerate launch --config_file NAME.yaml train.py`` turns the file into: its parsed arguments and
    the environment its launcher gives the training processes (read by accelerate's plugins there)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        # as accelerate.commands.launch.launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config.keys()) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def test_ddp_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    assert config.distributed_type == DistributedType.MULTI_GPU and config.num_processes > 1
    args, env = _launch_env("ddp")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp2_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    config = load_config_from_file(str(CONFIGS / "fsdp2.yaml"))
    assert config.distributed_type == DistributedType.FSDP
    args, env = _launch_env("fsdp2")
    assert args.use_fsdp and env["FSDP_VERSION"] == "2"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    # per-block units from the model's _no_split_modules: the wrapping tests/test_engines.py verifies
    assert plugin.fsdp_version == 2 and plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.reshard_after_forward is True and plugin.activation_checkpointing is False


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_point_at_the_shipped_json(stage):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(CONFIGS / f"zero{stage}.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED
    pointed = Path(config.deepspeed_config["deepspeed_config_file"])
    assert not pointed.is_absolute() and (REPO_ROOT / pointed).resolve() == (CONFIGS / f"ds_zero{stage}.json").resolve()
    shipped = json.loads((CONFIGS / f"ds_zero{stage}.json").read_text())
    assert shipped["zero_optimization"]["stage"] == stage
    # the batch, accumulation and clipping come from the training arguments, so the loss's bookkeeping and
    # DeepSpeed's agree; a number here could contradict --gradient_accumulation_steps
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert shipped[key] == "auto", key
    args, env = _launch_env(f"zero{stage}")
    assert args.use_deepspeed
    with mock.patch.dict(os.environ, {**env, "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO_ROOT / pointed)}):
        plugin = DeepSpeedPlugin()
    loaded = plugin.hf_ds_config.config
    assert loaded["zero_optimization"] == shipped["zero_optimization"]  # accelerate read our file
    assert {k: loaded[k] for k in shipped if k != "steps_per_print"} == {k: v for k, v in shipped.items()
                                                                         if k != "steps_per_print"}
    assert plugin.hf_ds_config.is_zero3() is (stage == 3)
    assert plugin.zero3_init_flag is (stage == 3)


def test_configs_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p.relative_to(CONFIGS.parent.parent).as_posix() for p in CONFIGS.iterdir() if p.is_file()}
    assert shipped == {"configs/accelerate/" + n for n in ("ddp.yaml", "fsdp2.yaml", "zero2.yaml", "zero3.yaml",
                                                            "ds_zero2.json", "ds_zero3.json")}
    from fnmatch import fnmatch

    for path in shipped:
        assert any(fnmatch(path, pattern) for pattern in data["scale_vlm"]), path
