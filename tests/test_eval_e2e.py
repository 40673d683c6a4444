"""End to end: a tiny local Qwen2-VL evaluated through ``scale-vlm eval`` on the fixtures and the built-in benchmark,
batched generation against one-at-a-time, and metrics computed from known outputs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from scale_vlm.cli import main
from scale_vlm.eval import evaluate_model, generate_batch, load_eval_dataset, score_outputs, summarize
from scale_vlm.eval.evaluate import format_summary
from scale_vlm.eval.generate import budget_hits
from scale_vlm.tiny.model import build_tiny_llava, build_tiny_qwen2_vl, save_tiny

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = [
    "<think>The square is red, so the answer is A.</think><answer>A</answer>",
    "Context: N/A\nQuestion: How many dots are there? Options: (A) circle (B) square (C) triangle",
] * 20
REQUIRED_METRICS = {"accuracy", "malformed_rate", "mean_think_tokens", "median_think_tokens", "mean_answer_tokens",
                    "num_examples"}
PREDICTION_KEYS = {"id", "prompt", "output", "parsed_answer", "gold", "correct", "malformed", "think_tokens",
                   "answer_tokens", "category", "hit_budget"}


def _scramble(model, seed: int) -> None:
    """Larger random weights: a freshly initialised tiny model just repeats its last prompt token, which would make
    the batched-vs-single comparison trivially equal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(CORPUS, vocab_size=400)
    _scramble(model, seed=0)
    return str(save_tiny(model, processor, tmp_path_factory.mktemp("tiny_qwen2_vl")))


def _read_results(out: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, predictions


def _check_consistent(metrics: dict, predictions: list[dict], num_examples: int) -> None:
    assert REQUIRED_METRICS <= set(metrics)
    assert metrics["num_examples"] == len(predictions) == num_examples
    assert all(PREDICTION_KEYS <= set(row) for row in predictions)
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in predictions) / num_examples)
    assert metrics["malformed_rate"] == pytest.approx(sum(r["malformed"] for r in predictions) / num_examples)
    assert metrics["mean_think_tokens"] == pytest.approx(statistics.fmean(r["think_tokens"] for r in predictions))
    assert metrics["median_think_tokens"] == pytest.approx(statistics.median(r["think_tokens"] for r in predictions))
    assert metrics["mean_answer_tokens"] == pytest.approx(statistics.fmean(r["answer_tokens"] for r in predictions))
    assert metrics["budget_hit_rate"] == pytest.approx(sum(r["hit_budget"] for r in predictions) / num_examples)
    by_category = metrics["by_category"]
    assert sum(c["num_examples"] for c in by_category.values()) == num_examples
    for name, cat in by_category.items():
        rows = [r for r in predictions if r["category"] == name]
        assert cat["num_examples"] == len(rows)
        assert cat["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))


def test_cli_eval_scienceqa(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "sqa"
    rc = main(["eval", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(FIXTURES / "scienceqa"), "--output_dir", str(out),
               "--max_new_tokens", "8", "--batch_size", "3"])
    assert rc == 0
    metrics, predictions = _read_results(out)
    _check_consistent(metrics, predictions, 4)
    assert [r["gold"] for r in predictions] == ["A", "B", "B", "A"]
    assert set(metrics["by_category"]) == {"Colors", "Word meaning", "Classification"}
    assert "accuracy" in capsys.readouterr().out

    # existing results are kept unless --overwrite_output_dir is given, which moves them aside
    rc = main(["eval", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(FIXTURES / "scienceqa"), "--output_dir", str(out)])
    assert rc == 2 and "--overwrite_output_dir" in capsys.readouterr().err
    rc = main(["eval", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(FIXTURES / "scienceqa"), "--output_dir", str(out),
               "--max_new_tokens", "4", "--image_only", "--overwrite_output_dir"])
    assert rc == 0
    assert _read_results(out)[0]["num_examples"] == 3
    (aside,) = out.glob("previous-run-*")
    assert _read_results(aside)[0]["num_examples"] == 4


def test_cli_eval_iconqa_from_yaml_config(tiny_model_dir, tmp_path):
    out = tmp_path / "iconqa"
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: {FIXTURES / 'iconqa'}\noutput_dir: {out}\nmax_new_tokens: 8\nbatch_size: 4\n"
    )
    assert main(["eval", "--config", str(config), "--progress", "false"]) == 0
    metrics, predictions = _read_results(out)
    _check_consistent(metrics, predictions, 4)
    assert metrics["config"]["batch_size"] == 4
    assert set(metrics["by_category"]) == {"choose_txt", "fill_in_blank"}
    assert [r["gold"] for r in predictions] == ["B", "3", "B", "4"]


def test_cli_eval_builtin_benchmark(tiny_model_dir, tmp_path):
    out = tmp_path / "builtin"
    rc = main(["eval", "--model_name_or_path", tiny_model_dir, "--dataset_name", "builtin", "--limit", "3", "--output_dir", str(out),
               "--max_new_tokens", "6"])
    assert rc == 0
    metrics, predictions = _read_results(out)
    _check_consistent(metrics, predictions, 3)
    assert [r["id"] for r in predictions] == ["test-0-000000", "test-0-000001", "test-0-000002"]


def test_cli_eval_reports_bad_dataset(tiny_model_dir, tmp_path, capsys):
    rc = main(["eval", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(tmp_path / "missing.csv"), "--output_dir",
               str(tmp_path / "o"), "--adapter", "nope"])
    assert rc == 2 and "--adapter must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("builder", [build_tiny_qwen2_vl, build_tiny_llava])
def test_batched_generation_matches_one_at_a_time(builder):
    torch.set_num_threads(1)
    model, processor = builder(CORPUS, vocab_size=400)
    _scramble(model, seed=1)
    # ScienceQA mixes questions with and without an image inside one batch.
    examples = load_eval_dataset(str(FIXTURES / "scienceqa")) + load_eval_dataset(str(FIXTURES / "iconqa"))
    batched = generate_batch(model, processor, examples, max_new_tokens=10, batch_size=8, progress=False)
    single = generate_batch(model, processor, examples, max_new_tokens=10, batch_size=1, progress=False)
    assert batched == single
    assert len(set(single)) > 1  # the outputs depend on the input, so the comparison means something
    assert processor.tokenizer.padding_side == "right"  # restored after generation


def test_metrics_from_known_outputs():
    _, processor = build_tiny_qwen2_vl(CORPUS, vocab_size=400)
    tokenizer = processor.tokenizer
    examples = load_eval_dataset(str(FIXTURES / "iconqa"))  # golds B, 3, B, 4
    outputs = [
        "<think>It has four equal sides.</think><answer>(B) square</answer>",  # correct, well formed
        "three",  # bare reply: correct but malformed
        "<think>It looks big.</think><answer>A",  # truncated, wrong
        "<think>A square has 4 sides.</think><answer>four</answer>",  # correct
    ]
    predictions = score_outputs(examples, outputs, tokenizer)
    assert [p["correct"] for p in predictions] == [True, True, False, True]
    assert [p["malformed"] for p in predictions] == [False, True, True, False]
    assert [p["parsed_answer"] for p in predictions] == ["(B) square", "three", "A", "four"]

    def n(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    think = [n("It has four equal sides."), 0, n("It looks big."), n("A square has 4 sides.")]
    assert [p["think_tokens"] for p in predictions] == think
    assert [p["answer_tokens"] for p in predictions] == [n("(B) square"), n("three"), n("A"), n("four")]
    metrics = summarize(predictions)
    assert metrics["accuracy"] == 0.75
    assert metrics["malformed_rate"] == 0.5
    assert metrics["mean_think_tokens"] == pytest.approx(sum(think) / 4)
    assert metrics["median_think_tokens"] == statistics.median(think)
    assert metrics["by_category"] == {
        "choose_txt": {"accuracy": 0.5, "malformed_rate": 0.5, "num_examples": 2},
        "fill_in_blank": {"accuracy": 1.0, "malformed_rate": 0.5, "num_examples": 2},
    }


def test_evaluate_model_signature_and_rows():
    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(CORPUS, vocab_size=400)
    examples = load_eval_dataset(str(FIXTURES / "iconqa"), limit=2)
    metrics, predictions = evaluate_model(model, processor, examples, batch_size=2, max_new_tokens=4, progress=False)
    assert metrics["num_examples"] == 2 and [p["id"] for p in predictions] == ["iconqa-1", "iconqa-2"]
    with pytest.raises(ValueError, match="no examples to evaluate"):
        evaluate_model(model, processor, [])


def test_budget_hits_per_row():
    eos = {2, 7}
    # (batch 3, 4 new tokens): ended at token 2 then padded with 0; ran the whole budget; ended on its last token (7)
    rows = torch.tensor([[5, 2, 0, 0], [5, 6, 5, 6], [5, 6, 5, 7]])
    assert budget_hits(rows, eos, max_new_tokens=4) == [False, True, False]
    # every row of a batch ended early: generation stopped before the budget, so none hit it
    assert budget_hits(torch.tensor([[5, 2], [2, 0]]), eos, max_new_tokens=4) == [False, False]
    assert budget_hits([[5, 6]], eos, max_new_tokens=2) == [True]
    # stopped short of the budget without an end token (another stopping rule): not the budget's doing
    assert budget_hits([[5, 6]], eos, max_new_tokens=4) == [False]


def test_evaluate_model_counts_replies_cut_off_by_the_budget():
    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(CORPUS, vocab_size=400)
    _scramble(model, seed=1)
    examples = load_eval_dataset(str(FIXTURES / "iconqa"))
    # A random model does not stop within 3 tokens: every reply hits the budget.
    metrics, predictions = evaluate_model(model, processor, examples, batch_size=2, max_new_tokens=3, progress=False)
    assert [p["hit_budget"] for p in predictions] == [True] * len(examples)
    assert metrics["budget_hit_rate"] == 1.0
    assert "ran out of the generation budget" in format_summary(metrics)
    # Every token an end token: each reply ends at its first token, none hits the budget.
    model.generation_config.eos_token_id = list(range(model.config.get_text_config().vocab_size))
    metrics, predictions = evaluate_model(model, processor, examples, batch_size=2, max_new_tokens=3, progress=False)
    assert not any(p["hit_budget"] for p in predictions) and metrics["budget_hit_rate"] == 0.0
    assert "ran out of the generation budget" not in format_summary(metrics)
    # Outputs scored without generation carry no flag and no rate.
    assert "budget_hit_rate" not in summarize(score_outputs(examples, ["x"] * len(examples), processor.tokenizer))
