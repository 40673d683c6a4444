"""The default loss path (fused head) and the plain path are exact under DDP, DeepSpeed ZeRO-2/3, FSDP1 and FSDP2.

Each test launches ``engine_check.py`` once with 2 CPU processes on gloo and checks, for every variant, the loss
and the parameter update of one SGD step (learning rate 1, so the update is the gradient) against one process
without an engine over the same 4 examples, whose think and answer lengths all differ. DeepSpeed runs on its CPU
accelerator; FSDP is wrapped the way accelerate wraps it (accelerate itself refuses FSDP on CPU). The matrix covers
every engine x head (tied / untied) with the default path; the other axes (plain path, both normalisations,
vanilla, LoRA, activation checkpointing, gradient accumulation) run on ZeRO-3 and FSDP2, where the head's weight
is sharded outside its forward, and a few on the others. Slow: ``pytest -m slow tests/test_engines.py``.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess

import pytest
from reliability_support import PYTHON, REPO_ROOT, subprocess_env

SCRIPT = str(REPO_ROOT / "tests" / "engine_check.py")
# fp32 on both sides; only the summation order differs (per-rank partial sums, the reduce-scatter / all-reduce).
# Observed: losses within 1.1e-7 relative, updates within 1.7e-6 of the largest gradient element.
LOSS_RTOL, UPDATE_TOL = 1e-5, 1e-5

TIED, UNTIED = {"tied": True}, {"tied": False}
# Where the head's weight is sharded outside its own forward (ZeRO-3, FSDP2): every axis.
SHARDED_HEAD = [
    TIED,
    UNTIED,
    {**UNTIED, "normalization": "batch"},
    {**UNTIED, "method": "vanilla"},
    {**UNTIED, "impl": "plain", "normalization": "batch"},
    {**UNTIED, "impl": "plain", "accum": 2},
    {**UNTIED, "lora": True},
    {**TIED, "lora": True},
    {**UNTIED, "ckpt": True},
    {**UNTIED, "ckpt": "wrapper"},
    {**UNTIED, "accum": 2},
    {**TIED, "accum": 2, "normalization": "batch"},
    {**UNTIED, "lora": True, "ckpt": True, "accum": 2},
]
MATRIX = {
    "ddp": [TIED, UNTIED, {**UNTIED, "impl": "plain", "normalization": "batch"}],
    "zero2": [TIED, UNTIED, {**UNTIED, "accum": 2}, {**TIED, "accum": 2, "normalization": "batch"}],
    "zero3": SHARDED_HEAD,
    "fsdp1": [TIED, UNTIED, {**TIED, "ckpt": True}],
    # lm_head its own FSDP unit: only with an untied head (a shared weight cannot live in two units)
    "fsdp1_head": [UNTIED, {**UNTIED, "normalization": "batch", "accum": 2}, {**UNTIED, "lora": True}],
    "fsdp2": SHARDED_HEAD,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_engine_check(engine: str, variants: list[dict], out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           SCRIPT, "--engine", engine, "--out", str(out), "--variants", json.dumps(variants), *extra]
    return subprocess.run(cmd, env=subprocess_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT)


@pytest.mark.slow
def test_a_worker_that_exits_non_zero_fails_the_launch(tmp_path):
    # The workers end without the interpreter's shutdown (reliability_support.end_distributed_worker): their exit
    # status must still reach the launcher, or a failing rank would pass.
    proc = launch_engine_check("ddp", [TIED], tmp_path / "results.json", "--exit_status_of_rank1", "3")
    assert proc.returncode != 0
    assert "exitcode  : 3" in proc.stderr + proc.stdout
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2  # it failed after writing its results


@pytest.mark.slow
@pytest.mark.parametrize("engine", list(MATRIX))
def test_engine_matches_one_process(engine, tmp_path):
    if engine.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (pip install -e '.[test]')")
    out = tmp_path / "results.json"
    proc = launch_engine_check(engine, MATRIX[engine], out)
    assert proc.returncode == 0, f"{engine} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    results = json.loads(out.read_text())
    assert len(results) == 2 * len(MATRIX[engine])  # every variant on both ranks
    for r in results:
        label = f"{engine} {r['variant']} rank {r['rank']}"
        assert "error" not in r, f"{label}:\n{r.get('error')}"
        assert r["max_ref"] > 1e-2, label  # the check is not vacuous
        if not r["variant"].get("lora"):  # LoRA freezes the head
            assert r["head_grad"] > 1e-2, label
        assert r["fused_fallback"] is False, label
        assert r["loss"] == pytest.approx(r["ref_loss"], rel=LOSS_RTOL), label
        assert r["max_abs_diff"] <= UPDATE_TOL * r["max_ref"], (label, r["max_abs_diff"], r["max_ref"])
