"""A few GRPO steps on a random tiny Qwen2-VL with image prompts from the built-in benchmark."""

import logging
import math

import pytest
import torch

from scale_vlm.eval.adapters import load_eval_dataset
from scale_vlm.grpo_config import ScaleGRPOConfig
from scale_vlm.grpo_trainer import ScaleGRPOTrainer, clipped_warning, load_grpo_dataset, to_grpo_dataset
from scale_vlm.rewards import make_reward_funcs
from scale_vlm.tiny.corpus import corpus_texts
from scale_vlm.tiny.model import build_tiny_qwen2_vl


def test_grpo_dataset_columns():
    examples = load_eval_dataset("builtin", "train", builtin_size=6)
    ds = to_grpo_dataset(examples)
    assert set(ds.column_names) == {"id", "prompt", "images", "answer", "choices"}
    row = ds[0]
    assert row["prompt"][0]["role"] == "user"
    assert [p["type"] for p in row["prompt"][0]["content"]] == ["image", "text"]
    assert row["prompt"][0]["content"][1]["text"] == examples[0].prompt
    assert row["answer"] == examples[0].gold and len(row["images"]) == 1


def test_config_defaults_and_weights():
    cfg = ScaleGRPOConfig(output_dir="unused", accuracy_weight=2.0, format_weight=0.25, use_cpu=True)
    assert cfg.reward_weights == [2.0, 0.25]
    assert cfg.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert cfg.activation_checkpointing is False
    assert ScaleGRPOConfig(output_dir="unused", reward_weights=[1.0, 0.0, 2.0], use_cpu=True).reward_weights == [1.0, 0.0, 2.0]


def _length_reward(prompts, completions, **kwargs):
    # varies within every group, so advantages are non-zero even for a random model
    return [len(c[0]["content"]) / 100.0 for c in completions]


def test_grpo_steps_tiny_vlm(tmp_path):
    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=20), vocab_size=400, num_layers=2)
    dataset = load_grpo_dataset("builtin", "train", builtin_size=8)
    args = ScaleGRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=12, learning_rate=1e-2, reward_weights=[1.0, 0.5, 1.0], use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    funcs = make_reward_funcs(("accuracy", "format")) + [_length_reward]
    trainer = ScaleGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                               processing_class=processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    said = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = lambda record: said.append(record.getMessage())
    grpo_logger = logging.getLogger("scale_vlm.grpo_trainer")  # its own handler: a pipeline may stop propagation
    level = grpo_logger.level
    grpo_logger.setLevel(logging.WARNING)
    grpo_logger.addHandler(listener)
    try:
        trainer.train()
    finally:
        grpo_logger.removeHandler(listener)
        grpo_logger.setLevel(level)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    # a random model rambles past 12 tokens: the budget warning, once, with the step's clipped share
    assert all(h["completions/clipped_ratio"] >= 0.5 for h in logs)
    assert [m for m in said if "max_completion_length 12" in m] == [clipped_warning(logs[0], 12)]
    for h in logs:
        for key in ("reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean",
                    "completions/mean_length", "completion_tokens", "generated_tokens", "loss"):
            assert key in h and math.isfinite(h[key]), key
    assert trainer.generated_tokens == sum(h["completion_tokens"] for h in logs) > 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "no parameter changed"


def test_clipped_warning_only_when_most_completions_were_cut_off():
    assert clipped_warning({"completions/clipped_ratio": 0.49}, 64) is None
    assert clipped_warning({"loss": 1.0}, 64) is None  # a log line without the generation metrics
    text = clipped_warning({"completions/clipped_ratio": 0.75}, 64)
    assert text.startswith("GRPO: 0.75 of this step's completions reached max_completion_length 64")


def test_trainer_given_a_lora_run_path_trains_its_adapter(tmp_path):
    """``ScaleGRPOTrainer(model="runs/sft-lora")``: the adapter is loaded trainable on the frozen base (transformers'
    own adapter loading leaves it frozen, for inference, and the first backward then fails)."""
    from peft import LoraConfig, get_peft_model

    from scale_vlm.tiny.model import save_tiny

    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=2), vocab_size=300, num_layers=1)
    base = save_tiny(model, processor, tmp_path / "base")
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.peft_config["default"].base_model_name_or_path = str(base)
    lora.save_pretrained(tmp_path / "sft-lora")
    processor.save_pretrained(tmp_path / "sft-lora")
    args = ScaleGRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2,
                           num_generations=2, use_cpu=True, report_to="none")
    trainer = ScaleGRPOTrainer(model=str(tmp_path / "sft-lora"), args=args,
                               train_dataset=load_grpo_dataset("builtin", "train", builtin_size=2))
    trainable = sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert len(trainable) == 2 * 2 and all(".lora_A." in n or ".lora_B." in n for n in trainable)  # 1 layer, q/v


def _checksum(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_greedy_probe_evaluates_the_live_policy_and_leaves_training_unchanged(tmp_path, monkeypatch):
    """The probe evaluates the policy of the moment (before step 1, every 2 steps, after the last), writes its
    rows into the log history, and the run's weights are the same with and without it (greedy draws no random
    numbers)."""
    import copy

    from transformers import TrainerCallback

    from scale_vlm import grpo_trainer
    from scale_vlm.grpo_trainer import GreedyProbe
    from scale_vlm.report import probe_curve

    torch.set_num_threads(1)
    model, processor = build_tiny_qwen2_vl(corpus_texts(per_setting=20), vocab_size=400, num_layers=2)
    twin = copy.deepcopy(model)
    dataset = load_grpo_dataset("builtin", "train", builtin_size=8)
    questions = load_eval_dataset("builtin", "test", builtin_size=3)
    evaluated, at_step = [], {}
    real_evaluate = grpo_trainer.evaluate_model

    def spy(model, processor, examples, **kwargs):
        evaluated.append((_checksum(model), len(examples), model.training))
        return real_evaluate(model, processor, examples, **kwargs)

    class Recorder(TrainerCallback):  # the policy's weights at each step, seen by the trainer itself
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            at_step[state.global_step] = _checksum(model)

        on_step_end = on_train_begin

    monkeypatch.setattr(grpo_trainer, "evaluate_model", spy)

    def train(policy, callbacks):
        args = ScaleGRPOConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, num_generations=4,
                               max_completion_length=12, learning_rate=1e-2, reward_weights=[1.0, 0.5, 1.0],
                               use_cpu=True, disable_tqdm=True, seed=0, report_to="none")
        trainer = ScaleGRPOTrainer(model=policy, reward_funcs=make_reward_funcs(("accuracy", "format")) + [_length_reward],
                                   args=args, train_dataset=dataset, processing_class=processor, callbacks=callbacks)
        trainer.train()
        return trainer

    probe = GreedyProbe(questions, 2, max_new_tokens=8)
    trainer = train(model, [Recorder(), probe])
    rows = probe_curve(trainer.state.log_history)
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert all(0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["malformed_rate"] <= 1.0 for r in rows)
    assert probe.seconds == pytest.approx(sum(r["seconds"] for r in rows), abs=0.02) and probe.seconds > 0
    assert [n for _, n, _ in evaluated] == [3, 3, 3]
    assert [c for c, _, _ in evaluated] == [at_step[0], at_step[2], at_step[3]]
    assert at_step[0] != at_step[3]  # the probe saw the weights change
    assert model.training  # the policy goes back to training after each probe
    train(twin, [])
    assert len(evaluated) == 3
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("num_questions", [0, 1, 2, 5, 7, 8])
def test_probe_share_gives_each_question_to_one_rank_and_every_rank_the_same_count(world, num_questions):
    from scale_vlm.grpo_trainer import probe_share

    shares = [probe_share(num_questions, world, rank) for rank in range(world)]
    owned = sorted(i for mine, _ in shares for i in mine)
    assert owned == list(range(num_questions))  # each question on exactly one rank
    assert {len(padded) for _, padded in shares} == {math.ceil(num_questions / world)}  # the same batches
    for mine, padded in shares:
        assert padded[: len(mine)] == mine and all(0 <= i < max(num_questions, 1) for i in padded)
    assert probe_share(5, 2, 1) == ([1, 3], [1, 3, 3])


def test_probe_share_refuses_a_rank_outside_the_world():
    from scale_vlm.grpo_trainer import probe_share

    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        probe_share(5, 2, 2)


def test_greedy_probe_refuses_an_empty_probe():
    from scale_vlm.grpo_trainer import GreedyProbe

    with pytest.raises(ValueError, match="at least 1 step"):
        GreedyProbe(load_eval_dataset("builtin", "test", builtin_size=1), 0)
    with pytest.raises(ValueError, match="no questions"):
        GreedyProbe([], 1)


def test_score_completions_refuses_a_count_that_is_not_one_per_question():
    # the probe scores gathered completions: one missing would shift every later answer onto the wrong question
    from scale_vlm.eval.evaluate import score_completions
    from scale_vlm.eval.generate import Completion

    questions = load_eval_dataset("builtin", "test", builtin_size=3)
    with pytest.raises(ValueError, match="2 completions for 3 examples"):
        score_completions(questions, [Completion("<answer>A</answer>", False)] * 2, processor=None)
