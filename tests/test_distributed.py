"""Two CPU processes (``accelerate launch``, gloo) give the loss and gradients of one process over the same batch.

The dataset has exactly one global batch (4 examples of different think lengths), so every optimizer step sees the
same 4 examples whatever order the samplers choose: 2 ranks x 2 examples vs 1 process x 4 examples. Both
normalisations are checked; ``batch`` needs the segment token counts all-reduced across ranks, ``sample`` the
example counts; the default (fused head) path with both, the plain path with one. DeepSpeed ZeRO-2/3 run through
the trainer too (``tests/test_engines.py`` covers the engines x heads x options without the trainer). Slow (three
Python start-ups per case, each importing torch + transformers): ``pytest -m slow tests/test_distributed.py``.
The GRPO greedy probe shares its questions between the processes and gives the one-process result (last test).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import numpy as np
import pytest
from reliability_support import PYTHON, REPO_ROOT, colour_image, subprocess_env, tiny_model_dir, write_jsonl

ACCELERATE = shutil.which("accelerate", path=str(__import__("pathlib").Path(PYTHON).parent)) or "accelerate"
SCRIPT = str(REPO_ROOT / "tests" / "dist_check.py")
PROBE_SCRIPT = str(REPO_ROOT / "tests" / "probe_check.py")
GRPO_GENERATION_SCRIPT = str(REPO_ROOT / "tests" / "grpo_generation_check.py")
# float32 forward/backward; the only differences are summation order (per-rank partial sums + the all-reduce)
# and padding lengths (a rank pads to its own longest example). Losses agree to ~1e-7 relative; gradient
# elements to ~1e-7 of the largest gradient element (tiny elements can differ by ~4e-5 relative).
RTOL, ATOL = 1e-4, 1e-5


def _row(i: int, repeat: int) -> dict:
    think = " ".join(["I look at the grid and count the shapes."] * repeat)
    # answers of different lengths too: with equal answer lengths a wrong answer normaliser could not show
    answer = " ".join([f"{i + 1}"] + ["red circle"] * (3 - i))
    return {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"How many shapes? ({i})"}]},
            {"role": "assistant",
             "content": [{"type": "text", "text": f"<think>{think}</think><answer>{answer}</answer>"}]},
        ],
        "images": [f"images/{i}.png"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-data")
    (root / "images").mkdir()
    for i in range(4):
        colour_image(i).save(root / "images" / f"{i}.png")
    # think lengths 1, 2, 5, 9 sentences: sample and batch normalisation give different losses
    return write_jsonl(root / "train.jsonl", [_row(i, r) for i, r in enumerate([1, 2, 5, 9])])


def test_the_data_has_unequal_think_and_answer_lengths(data):
    """Not slow: the multi-process checks are only meaningful because every example's think and answer token counts
    differ (then sample and batch normalisation, and a wrong per-rank normaliser, all give different losses)."""
    from datasets import Dataset
    from reliability_support import load_tiny_processor

    from scale_vlm.data.prepare import prepare_dataset
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_THINK

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    prepared, _ = prepare_dataset(Dataset.from_list(rows), load_tiny_processor(), image_root=str(data.parent),
                                  progress=False)
    think = [r["segment_ids"].count(SEGMENT_THINK) for r in prepared]
    answer = [r["segment_ids"].count(SEGMENT_ANSWER) for r in prepared]
    assert len(set(think)) == 4 and len(set(answer)) == 4, (think, answer)
    # sample normalisation (mean of per-example means) differs from batch (token mean) on these lengths
    nll = [1.0 + i for i in range(4)]
    sample = sum(nll) / 4
    batch = sum(n * t for n, t in zip(nll, think)) / sum(think)
    assert abs(sample - batch) > 0.1


def _run(cmd: list[str], timeout: int = 300, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, env=subprocess_env(ACCELERATE_USE_CPU="1", **(env or {})), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _load(out, rank: int):
    record = json.loads((out / f"rank{rank}.json").read_text())
    grads = [np.load(out / f"rank{rank}_step{s}.npy", allow_pickle=False) for s in (1, 2)]
    return record, grads


@pytest.mark.slow
@pytest.mark.parametrize("normalization,loss_impl", [("sample", "fused"), ("batch", "fused"), ("batch", "plain")])
def test_two_processes_match_one(normalization, loss_impl, data, tmp_path):
    model = str(tiny_model_dir())
    common = ["--model", model, "--data", str(data), "--normalization", normalization, "--steps", "2",
              "--loss_impl", loss_impl]
    single, multi, accum = tmp_path / "single", tmp_path / "multi", tmp_path / "accum"
    _run([PYTHON, SCRIPT, *common, "--out", str(single), "--per_device_batch", "4"])
    _run([ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          SCRIPT, *common, "--out", str(multi), "--per_device_batch", "2"])
    # gradient accumulation over 2 micro-batches of 2 is the same global batch too
    _run([PYTHON, SCRIPT, *common, "--out", str(accum), "--per_device_batch", "2", "--grad_accum", "2"])

    ref, ref_grads = _load(single, 0)
    assert ref["world_size"] == 1 and len(ref["steps"]) == 2
    for out, world in ((multi, 2), (accum, 1)):
        for rank in range(world):
            rec, grads = _load(out, rank)
            assert rec["world_size"] == world
            for got, want in zip(rec["steps"], ref["steps"]):
                assert got["step"] == want["step"]
                assert (got["w_think"], got["w_answer"]) == (want["w_think"], want["w_answer"])
                for key in ("loss", "loss_think", "loss_answer"):
                    assert got[key] == pytest.approx(want[key], rel=RTOL), (out.name, rank, key, got, want)
            for step, (g, r) in enumerate(zip(grads, ref_grads), start=1):
                assert g.shape == r.shape
                assert np.linalg.norm(r) > 1e-3
                np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL * np.abs(r).max(),
                                           err_msg=f"{out.name} rank {rank} step {step} gradient")


@pytest.mark.slow
@pytest.mark.parametrize("stage,head,accum,normalization", [(3, "untied", 2, "batch"), (2, "tied", 1, "sample")])
def test_deepspeed_trainer_matches_one_process(stage, head, accum, normalization, data, tmp_path):
    # ScaleSFTTrainer under DeepSpeed ZeRO (CPU accelerator): one SGD step at learning rate 1, so the parameter
    # update is the gradient; ZeRO-3 with an untied head crashed in backward before the head ran inside lm_head's
    # call. Gradient accumulation checks that the loss is not divided by the accumulation steps a second time.
    pytest.importorskip("deepspeed")
    common = ["--model", str(tiny_model_dir()), "--data", str(data), "--normalization", normalization, "--steps",
              "1", "--optim", "sgd", "--lr", "1.0"] + (["--untie_head"] if head == "untied" else [])
    single, multi = tmp_path / "single", tmp_path / "zero"
    _run([PYTHON, SCRIPT, *common, "--out", str(single), "--per_device_batch", "4"])
    _run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), SCRIPT,
          *common, "--out", str(multi), "--per_device_batch", str(2 // accum), "--grad_accum", str(accum),
          "--zero_stage", str(stage)], env={"DS_ACCELERATOR": "cpu"})
    ref = json.loads((single / "rank0.json").read_text())
    ref_grad = np.load(single / "rank0_step1.npy")
    ref_params = np.load(single / "rank0_params.npy")
    assert np.abs(ref_grad).max() > 1e-2
    for rank in range(2):
        rec = json.loads((multi / f"rank{rank}.json").read_text())
        assert rec["world_size"] == 2
        for key in ("loss", "loss_think", "loss_answer"):
            assert rec["steps"][0][key] == pytest.approx(ref["steps"][0][key], rel=RTOL), (rank, key)
        params = np.load(multi / f"rank{rank}_params.npy")
        # same initial weights on both sides, so equal parameters after the step mean equal updates (= gradients)
        np.testing.assert_allclose(params, ref_params, rtol=0, atol=ATOL * np.abs(ref_grad).max(),
                                   err_msg=f"ZeRO-{stage} rank {rank} parameters after one step")


@pytest.mark.slow
def test_adaptive_progress_is_the_same_on_every_process(data, tmp_path):
    """progress_mode adaptive: each step's think loss is all-reduced before the state update, so both ranks hold
    the same state (bit for bit) and follow the one-process run; a per-rank think loss (each rank sees other
    examples) would give each rank its own EMA, progress and weights."""
    model = str(tiny_model_dir())
    # tolerance 1: every measured step is a plateau (p: 0, 0, 1 / (0.5 * 3), 1), so the weights really move
    common = ["--model", model, "--data", str(data), "--steps", "4", "--adaptive_tolerance", "1.0"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run([PYTHON, SCRIPT, *common, "--out", str(single), "--per_device_batch", "4"])
    _run([ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          SCRIPT, *common, "--out", str(multi), "--per_device_batch", "2"])
    ref = json.loads((single / "rank0.json").read_text())
    assert [s["schedule_progress"] for s in ref["steps"]] == pytest.approx([0.0, 0.0, 2 / 3, 1.0])
    ranks = [json.loads((multi / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["adaptive"] == ranks[1]["adaptive"]  # exactly: one all-reduced measurement per step
    assert ranks[0]["adaptive"]["history"] == pytest.approx(ref["adaptive"]["history"], rel=RTOL)
    assert len(ref["adaptive"]["history"]) == 2 and ref["adaptive"]["step"] == 4
    for rec in ranks:
        for got, want in zip(rec["steps"], ref["steps"], strict=True):
            assert (got["schedule_progress"], got["w_think"], got["w_answer"]) == (
                want["schedule_progress"], want["w_think"], want["w_answer"])
            assert got["loss_think"] == pytest.approx(want["loss_think"], rel=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["none", "zero3", "fsdp2"])
def test_greedy_probe_shares_its_questions_and_gives_the_one_process_result(engine, tmp_path):
    """2 processes each generate for 3 of the 5 questions (strided, the second's padded with a repeat) instead of
    all 5, and both score the gathered completions exactly as one process does. The ranks' completions stop at
    different steps, so under ZeRO-3, where each forward pass needs both ranks, the probe only finishes if
    generation keeps them in step and they run the same number of batches. Under FSDP2 it also needs the root
    unit's own parameters gathered: the images are encoded before the root's first forward."""
    if engine == "zero3":
        pytest.importorskip("deepspeed")
    common = ["--model", str(tiny_model_dir()), "--num_questions", "5", "--max_new_tokens", "12"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run([PYTHON, PROBE_SCRIPT, *common, "--out", str(single)])
    _run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          PROBE_SCRIPT, *common, "--out", str(multi), "--engine", engine], env={"DS_ACCELERATOR": "cpu"})
    ref = json.loads((single / "rank0.json").read_text())
    assert ref["world_size"] == 1 and ref["generated"] == 5
    assert len(set(ref["lengths"])) > 1  # some questions stop early: the lockstep below is really exercised
    ranks = [json.loads((multi / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, (rec, share) in enumerate(zip(ranks, ([0, 2, 4], [1, 3, 3]))):
        assert (rec["world_size"], rec["rank"], rec["generated"]) == (2, rank, 3)
        assert rec["lengths"] == [ref["lengths"][i] for i in share]  # its own questions, each as one process
        assert rec["predictions"] == ref["predictions"]
        assert rec["metrics"] == ref["metrics"]
    assert ranks[0]["lengths"] != ranks[1]["lengths"]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_grpo_generation_under_fsdp2_samples_what_the_plain_model_samples(lora, tmp_path):
    """TRL's GRPO generation (through ``ScaleGRPOTrainer._generate_single_turn``) on a ``fully_shard`` model: a VLM
    encodes its images before the root's first forward, where the root unit's own parameters (the patch embedding)
    are still shards unless gathered around generation. Gathered, FSDP2 computes what the plain model computes: the
    same seeded samples on each rank, with LoRA adapters too (TRL's FSDP2 + LoRA + GRPO report)."""
    runs = {}
    for engine in ("none", "fsdp2"):
        out = tmp_path / engine
        _run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
              GRPO_GENERATION_SCRIPT, "--model", str(tiny_model_dir()), "--out", str(out), "--engine", engine,
              *(["--lora"] if lora else [])])
        runs[engine] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in range(2):
        plain, sharded = runs["none"][rank], runs["fsdp2"][rank]
        assert (sharded["world_size"], sharded["rank"]) == (2, rank)
        assert len(sharded["completion_ids"]) == 2 and all(len(c) > 0 for c in sharded["completion_ids"])
        assert sharded["completion_ids"] == plain["completion_ids"]
    assert runs["fsdp2"][0]["completion_ids"] != runs["fsdp2"][1]["completion_ids"]  # the ranks' own prompts
