"""Model-family conformance: every supported family, built locally as a tiny random model of its exact transformers
class with its real chat template and special-token layout (tests/families.py), goes through rendering, collation,
both loss paths, batched evaluation, GRPO and LoRA exactly like the processor and the model expect."""

import families as F
import pytest
import torch

FAMILY_NAMES = list(F.FAMILIES)
# family_dirs (conftest.py): the session's builds, shared with tests/test_packing.py


@pytest.mark.parametrize("check", list(F.CHECKS))
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_conforms(family, check, family_dirs, tmp_path):
    try:
        path = family_dirs(family)
    except F.FamilyUnavailable as err:  # the table (docs/families.md) says so too
        pytest.skip(str(err))
    F.run_check(check, family, path, tmp_path)


# The paper's three models: each shipped config trains on the conformance model of its family (CPU overrides
# only: model path, a tiny dataset, 2 steps, no bf16, no checkpoints) and keeps every example.
PAPER_CONFIGS = {
    "sft_qwen2_5_vl_3b.yaml": "qwen2_5_vl",
    "sft_llava_next_mistral_7b_lora.yaml": "llava_next_mistral",
    "sft_gemma3_4b.yaml": "gemma3",
}


def _write_jsonl(folder, n=4):
    import json

    rows = []
    for i in range(n):
        row = F.messages_row(i, 1 + i % 2)
        row["images"][0].save(folder / f"img{i}.png")
        row["images"] = [f"img{i}.png"]
        rows.append(row)
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


@pytest.mark.parametrize("config", list(PAPER_CONFIGS))
def test_paper_config_trains_on_its_family(config, family_dirs, tmp_path):
    import json
    import os

    import yaml

    from scale_vlm.cli import main

    path = os.path.join(os.path.dirname(__file__), "..", "scale_vlm", "configs", config)
    with open(path) as f:
        shipped = yaml.safe_load(f)
    out = tmp_path / "run"
    args = ["sft", "--config", path, "--model_name_or_path", str(family_dirs(PAPER_CONFIGS[config])),
            "--dataset_name", _write_jsonl(tmp_path), "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--use_cpu",
            "--bf16", "false", "--dtype", "float32", "--save_strategy", "no", "--logging_steps", "1",
            "--report_to", "none"]
    overridden = {a[2:] for a in args if a.startswith("--")}
    assert main(args) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["total"] == 4 and report["kept"] == 4 and report["skipped"] == {}, report
    assert report["think_tokens"] > 0 and report["answer_tokens"] > 0
    resolved = yaml.safe_load((out / "scale_config.yaml").read_text())
    # every shipped setting that was not overridden (method, schedule, weights, loss, LoRA, lengths, activation
    # checkpointing, ...) is what ran
    kept = {k: v for k, v in shipped.items() if k not in overridden}
    assert {k: resolved[k] for k in kept} == kept
    files = set(os.listdir(out))
    assert ("adapter_model.safetensors" in files) == bool(shipped.get("use_peft"))


# -- the checks fail when what they guard is broken (on Gemma-3: small vocabulary, every kind of extra input) --------

def _wrap_render(monkeypatch, change):
    from scale_vlm.data import render

    original = render.render_example

    def broken(*args, **kwargs):
        out = original(*args, **kwargs)
        change(out)
        return out

    monkeypatch.setattr(render, "render_example", broken)


@pytest.mark.parametrize("damage", ["lost", "inserted"])
def test_tokens_check_catches_a_lost_or_inserted_token(damage, family_dirs, monkeypatch):
    from scale_vlm.segments import SEGMENT_ANSWER

    eos = F.family_processor(family_dirs("gemma3")).tokenizer.eos_token_id

    def change(out):
        if damage == "lost":  # the unsupervised "\n" after <end_of_turn>
            at, values = len(out.input_ids) - 1, None
        else:  # <eos> after <end_of_turn>, as rendering did when <end_of_turn> was not taken for the end of turn
            at = max(i for i, s in enumerate(out.segment_ids) if s == SEGMENT_ANSWER) + 1
            values = {"input_ids": eos, "attention_mask": 1, "labels": eos, "segment_ids": SEGMENT_ANSWER}
        for key in ("input_ids", "attention_mask", "labels", "segment_ids"):
            getattr(out, key).pop(at) if values is None else getattr(out, key).insert(at, values[key])
        for extra in out.extra.values():
            extra.pop(at) if values is None else extra.insert(at, 0)

    _wrap_render(monkeypatch, change)
    with pytest.raises(AssertionError, match="differ from the processor's"):
        F.check_tokens(F.FAMILIES["gemma3"], family_dirs("gemma3"))


@pytest.mark.parametrize("shift", ["think_boundary", "end_of_turn", "prompt"])
def test_segments_check_catches_a_moved_boundary(shift, family_dirs, monkeypatch):
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

    def move(out):
        seg = out.segment_ids
        if shift == "think_boundary":  # the first answer token goes to think
            seg[seg.index(SEGMENT_ANSWER)] = SEGMENT_THINK
        elif shift == "end_of_turn":  # <end_of_turn> left unsupervised
            last = max(i for i, s in enumerate(seg) if s == SEGMENT_ANSWER)
            seg[last] = SEGMENT_PROMPT
        else:  # the generation prompt's last token supervised
            seg[seg.index(SEGMENT_THINK) - 1] = SEGMENT_THINK
        out.labels[:] = [t if s != SEGMENT_PROMPT else -100 for t, s in zip(out.input_ids, seg)]

    _wrap_render(monkeypatch, move)
    with pytest.raises(AssertionError, match="segments differ|supervised"):
        F.check_segments(F.FAMILIES["gemma3"], family_dirs("gemma3"))


@pytest.mark.parametrize("damage", ["drop_token_type_ids", "zero_token_type_ids", "swap_images"])
def test_model_inputs_check_catches_a_dropped_or_wrong_input(damage, family_dirs, monkeypatch):
    from scale_vlm.data.collator import ScaleCollator

    original = ScaleCollator.__call__

    def broken(self, rows):
        if damage == "swap_images":
            rows = [dict(r, images=o["images"]) for r, o in zip(rows, rows[::-1])]
        batch = original(self, rows)
        if damage == "drop_token_type_ids":
            batch.pop("token_type_ids")
        elif damage == "zero_token_type_ids":
            batch["token_type_ids"].zero_()
        return batch

    monkeypatch.setattr(ScaleCollator, "__call__", broken)
    with pytest.raises(AssertionError, match="drops processor outputs|logits of the collated batch differ"):
        F.check_model_inputs(F.FAMILIES["gemma3"], family_dirs("gemma3"))


def test_fused_loss_check_catches_a_different_fused_loss(family_dirs, monkeypatch, tmp_path):
    import scale_vlm.sft_trainer as trainer_module

    original = trainer_module.fused_segment_loss

    def off_by_a_little(*args, **kwargs):
        out, outputs = original(*args, **kwargs)
        return out._replace(loss=out.loss * 1.001) if hasattr(out, "_replace") else _scaled(out), outputs

    def _scaled(out):
        import dataclasses

        return dataclasses.replace(out, loss=out.loss * 1.001)

    monkeypatch.setattr(trainer_module, "fused_segment_loss", off_by_a_little)
    with pytest.raises(AssertionError, match="fused loss differs"):
        F.check_fused_loss(F.FAMILIES["gemma3"], family_dirs("gemma3"), tmp_path)


def test_eval_check_catches_right_padded_generation(family_dirs, monkeypatch):
    import contextlib

    from scale_vlm.eval import generate

    monkeypatch.setattr(generate, "left_padding", lambda processor: contextlib.nullcontext())
    tok = F.family_processor(family_dirs("gemma3")).tokenizer
    monkeypatch.setattr(tok, "padding_side", "right")
    with pytest.raises(AssertionError, match="batch size 3 gives"):
        F.check_eval_batching(F.FAMILIES["gemma3"], family_dirs("gemma3"))


def test_lora_check_catches_an_adapter_saved_before_training(family_dirs, monkeypatch, tmp_path):
    from scale_vlm.sft_trainer import ScaleSFTTrainer

    original_train = ScaleSFTTrainer.train

    def train_but_save_untrained_weights(self, *args, **kwargs):
        state = {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_" in n}
        result = original_train(self, *args, **kwargs)
        original_save = self.save_model

        def save_model(output_dir=None, _internal_call=False):
            trained = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in state}
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    if n in state:
                        p.copy_(state[n])
            original_save(output_dir, _internal_call)
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    if n in trained:
                        p.copy_(trained[n])

        self.save_model = save_model
        return result

    monkeypatch.setattr(ScaleSFTTrainer, "train", train_but_save_untrained_weights)
    with pytest.raises(AssertionError, match="reloaded LoRA model differs"):
        F.check_lora(F.FAMILIES["gemma3"], family_dirs("gemma3"), tmp_path)


# -- family reasoning formats: Gemma-4's thought channel, Qwen3.5's prompt-opened think block ---------------------

def test_gemma4_thought_channel_is_the_think_segment_and_parses(family_dirs):
    from scale_vlm.data.render import reasoning_format, render_example
    from scale_vlm.parsing import ReasoningFormat
    from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_THINK

    processor = F.family_processor(family_dirs("gemma4"))
    tok = processor.tokenizer
    assert reasoning_format(processor) == ReasoningFormat("<|channel>thought", "<channel|>", from_field=True,
                                                          template_kwargs=(("enable_thinking", True),))
    rendered = render_example(F._two_turn_example(2), processor)
    think = tok.decode([t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s == SEGMENT_THINK])
    answer = tok.decode([t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s == SEGMENT_ANSWER])
    reasoning = "I look at the image. The square is blue, option (C). I look at the image. The square is blue, option (C)."
    assert think == f"<|channel>thought\n{reasoning}\n<channel|>"  # the channel, not literal <think> text
    assert answer == "<answer>(C)</answer><turn|>"
    # thinking on: the system turn opens with <|think|>, in training as at generation
    assert rendered.text.startswith("<bos><|turn>system\n<|think|>\n<turn|>\n")
    # the earlier turn's reasoning is dropped by the template (before the last user turn), not left as tags
    assert "<think>" not in rendered.text and rendered.text.count("<|channel>") == 1


def test_lora_names_on_gemma4_adapt_the_language_model_and_leave_out_the_clippable_vision_layers(family_dirs, caplog):
    """`--lora_target_modules q_proj v_proj` on Gemma-4: its vision tower's q_proj/v_proj are Gemma4ClippableLinear,
    which PEFT refuses ('is not supported'); the CLI's LoRA config leaves exactly those out, and says so."""
    import logging

    from peft import LoraConfig, get_peft_model
    from trl import ModelConfig

    from scale_vlm.lora import lora_config

    path = family_dirs("gemma4")
    with pytest.raises(ValueError, match="is not supported"):  # the trap this guards: plain PEFT on these names
        get_peft_model(F.family_model(path), LoraConfig(target_modules=["q_proj", "v_proj"]))
    model = F.family_model(path)
    linear = {name for name, module in model.named_modules()
              if name.endswith((".q_proj", ".v_proj")) and isinstance(module, torch.nn.Linear)}
    clippable = {name for name, module in model.named_modules()
                 if name.endswith((".q_proj", ".v_proj")) and type(module).__name__ == "Gemma4ClippableLinear"}
    assert linear and clippable and all("language_model" in n for n in linear)
    caplog.set_level(logging.INFO, logger="scale_vlm")
    config = lora_config(ModelConfig(use_peft=True, lora_target_modules=["q_proj", "v_proj"], lora_r=4), model, "sft")
    assert set(config.exclude_modules) == clippable
    adapted = {n.split(".lora_A.")[0] for n, _ in get_peft_model(model, config).named_parameters() if ".lora_A." in n}
    assert {n.removeprefix("base_model.model.") for n in adapted} == linear
    assert any(f"names {len(clippable)} modules PEFT cannot adapt (Gemma4ClippableLinear" in r.getMessage()
               for r in caplog.records)


def _gemma4_completion(tok, reasoning: str, answer: str):
    ids = tok(f"<|channel>thought\n{reasoning}\n<channel|><answer>{answer}</answer><turn|>", add_special_tokens=False)["input_ids"]
    return ids, tok.decode(ids, skip_special_tokens=True)  # what TRL hands the reward functions as text


def test_grpo_rewards_read_gemma4_completions_through_its_channel(family_dirs):
    from scale_vlm.data.render import reasoning_format
    from scale_vlm.rewards import make_reward_funcs

    processor = F.family_processor(family_dirs("gemma4"))
    tok = processor.tokenizer
    ids, text = _gemma4_completion(tok, "the square is green", "(B)")
    assert "<|channel>" not in text  # TRL's decoding drops the special delimiters
    fmt = reasoning_format(processor)
    accuracy, fmt_reward = make_reward_funcs(("accuracy", "format"), reasoning=fmt, tokenizer=tok)
    kwargs = dict(completion_ids=[ids], answer=["B"])
    assert accuracy(["p"], [text], **kwargs) == [1.0]
    assert fmt_reward(["p"], [text], **kwargs) == [1.0]
    # without the family's format the same completion has no think block: format reward 0
    plain_format = make_reward_funcs(("format",))[0]
    assert plain_format(["p"], [text], **kwargs) == [0.0]


def test_generation_output_of_a_prompt_opened_think_block_parses(family_dirs):
    """Qwen3.5's generation prompt writes <think>: the model's output starts inside it, and is read as a whole block
    by evaluation (as_tagged) and the GRPO rewards alike."""
    from scale_vlm.data.render import reasoning_format
    from scale_vlm.parsing import as_tagged, parse_output
    from scale_vlm.rewards import make_reward_funcs

    processor = F.family_processor(family_dirs("qwen3_5_nothink"))
    fmt = reasoning_format(processor)
    assert fmt.opened_by_prompt and not fmt.from_field and fmt.template_kwargs == (("enable_thinking", True),)
    completion = "the square is green\n</think>\n\n<answer>(B)</answer>"
    parsed = parse_output(as_tagged(completion, fmt))
    assert (parsed.think, parsed.answer, parsed.malformed) == ("the square is green", "(B)", False)
    assert parse_output(completion).malformed  # read raw, the closing tag has no opening one
    fmt_reward = make_reward_funcs(("format",), reasoning=fmt, tokenizer=processor.tokenizer)[0]
    assert fmt_reward(["p"], [completion]) == [1.0]
    assert make_reward_funcs(("format",))[0](["p"], [completion]) == [0.0]


@pytest.mark.parametrize("damage", ["tags_not_field", "no_think_kwargs"])
def test_reasoning_shapes_check_catches_a_wrong_format(damage, family_dirs, monkeypatch):
    """Rendered as literal tags instead of the thought channel, or without thinking on, Gemma-4 fails the checks."""
    import dataclasses

    from scale_vlm.data import render

    original = render.reasoning_format

    def broken(processor, tags=render.DEFAULT_TAGS):
        fmt = original(processor, tags)
        if damage == "tags_not_field":
            return dataclasses.replace(fmt, from_field=False, think_open=tags.think_open, think_close=tags.think_close)
        return dataclasses.replace(fmt, template_kwargs=())

    monkeypatch.setattr(render, "reasoning_format", broken)
    with pytest.raises(AssertionError, match="template's own rendering|differ from the processor's|rendered text differs"):
        F.check_reasoning_shapes(F.FAMILIES["gemma4"], family_dirs("gemma4"))
