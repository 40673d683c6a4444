"""The CLI destroys the process group a launcher set up (Trainer never does), whatever the command's outcome."""

from __future__ import annotations

import socket

import pytest
import torch.distributed as dist

from scale_vlm.cli import main


@pytest.fixture
def process_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("argv, status", [(["plot-schedule"], 0), (["plot-schedule", "--schedule", "nosuch"], 2)])
def test_the_cli_destroys_the_process_group(process_group, argv, status):
    assert dist.is_initialized()
    assert main(argv) == status
    assert not dist.is_initialized()
