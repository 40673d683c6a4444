"""GRPO at scale: TRL's vLLM generation options pass through ``ScaleGRPOConfig`` and ``scale-vlm grpo``.

vLLM itself needs a GPU and is not installed for the tests: these check the configuration reaches TRL's
``GRPOConfig`` fields unchanged, and that the CLI says what is missing instead of failing inside TRL.
"""

from __future__ import annotations

import importlib.util

import pytest

from scale_vlm.grpo_config import ScaleGRPOConfig


def _parse(argv):
    from trl import TrlParser

    from scale_vlm.cli.grpo import GRPOScriptArguments

    return TrlParser((GRPOScriptArguments, ScaleGRPOConfig)).parse_args_and_config(argv)


@pytest.mark.parametrize("argv,expected", [
    (["--use_vllm", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.45",
      "--vllm_tensor_parallel_size", "2", "--vllm_enable_sleep_mode", "true"],
     {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.45,
      "vllm_tensor_parallel_size": 2, "vllm_enable_sleep_mode": True}),
    (["--use_vllm", "--vllm_mode", "server", "--vllm_server_base_url", "http://gen-node:8000",
      "--vllm_server_timeout", "600"],
     {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://gen-node:8000",
      "vllm_server_timeout": 600.0}),
    ([], {"use_vllm": False, "vllm_mode": "colocate"}),
])
def test_cli_parses_and_forwards_vllm_options(argv, expected, tmp_path):
    script, args = _parse(["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--use_cpu", "true", *argv])
    assert isinstance(args, ScaleGRPOConfig)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.reward_weights == [1.0, 0.5]  # our fields still set alongside TRL's


def test_config_keeps_vllm_fields(tmp_path):
    args = ScaleGRPOConfig(output_dir=str(tmp_path), use_cpu=True, use_vllm=True, vllm_mode="server",
                           vllm_server_host="10.0.0.2", vllm_server_port=8001)
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_host, args.vllm_server_port) == \
        (True, "server", "10.0.0.2", 8001)
    assert args.to_dict()["vllm_mode"] == "server"  # what TRL's trainer reads


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_cli_use_vllm_without_vllm_is_a_clear_error(tmp_path, capsys):
    from scale_vlm.cli import grpo

    code = grpo.main(["--model_name_or_path", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"),
                      "--use_cpu", "true", "--use_vllm"])
    assert code != 0
    assert "vLLM" in capsys.readouterr().err
