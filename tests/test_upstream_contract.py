"""The contract with TRL and transformers, in one place: every upstream internal scale-vlm relies on, checked for the
signature and behaviour it relies on.

The pin ``trl>=1.16,<1.17`` / ``transformers>=5.20,<6`` (pyproject.toml) is what keeps these safe. An upgrade that
changes one of them fails here first, with the name of what changed and the scale-vlm code that depends on it, instead
of as a wrong loss, a silently unrestored checkpoint or a crash deep inside a training run.

| upstream internal | relied on by |
|---|---|
| ``Trainer.get_batch_samples(epoch_iterator, num_batches, device)`` | ``ScaleSFTTrainer.get_batch_samples``: the step's global segment counts |
| ``Trainer._load_from_checkpoint(resume_from_checkpoint, model=None)`` | ``ScaleSFTTrainer._load_from_checkpoint``: strict VLM weight restore |
| ``Trainer.loss_is_scaled_for_ga`` | ``ScaleSFTTrainer``: its loss is already normalised over the step |
| ``Trainer.get_tp_size / get_cp_size / get_sp_size`` | ``parallelism.check_data_parallel_only`` |
| ``SFTTrainer`` refuses ``padding_free`` for vision datasets | ``ScaleSFTTrainer.__init__`` sets it off around ``super().__init__`` and packs itself |
| ``SFTTrainer._metrics[mode]`` | both trainers log ``mean_token_accuracy`` / ``completion_tokens`` into it |
| ``GRPOTrainer._generate_single_turn`` / ``_generate_and_score_completions(inputs)`` | ``ScaleGRPOTrainer``: rope-cache reset, generated-token count |
| ``ExportableState`` and ``TrainerState.stateful_callbacks`` | the adaptive schedule's checkpointed state |
| Qwen-VL ``get_rope_index(input_ids, mm_token_type_ids=, image_grid_thw=)`` | ``packing.packed_position_ids`` |
| ``argparse`` ``_actions``, ``_action_groups``, ``_group_actions`` | ``cli.sft.group_options_first``, ``cli.common`` |
| each model class's post-head steps | ``head_transform.HEAD_STEPS`` (the fused head's logit scale and softcap) |
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re

import pytest
import transformers
import trl

from scale_vlm.head_transform import HEAD_STEPS, UNSUPPORTED_HEAD_STEPS, head_transform


def _parameters(func) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_the_pins_are_the_versions_this_contract_was_checked_on():
    assert trl.__version__.startswith("1.16."), trl.__version__
    assert 5 <= int(transformers.__version__.split(".")[0]) < 6, transformers.__version__


# ------------------------------------------------------------------------------------------- Trainer / SFTTrainer


def test_trainer_get_batch_samples_signature_and_behaviour():
    from transformers import Trainer

    assert _parameters(Trainer.get_batch_samples) == ["self", "epoch_iterator", "num_batches", "device"]

    class Probe:  # what get_batch_samples reads besides the iterator
        def _get_num_items_in_batch(self, batch_samples, device):
            return None

    batches = [{"input_ids": [1]}, {"input_ids": [2]}, {"input_ids": [3]}]
    samples, _ = Trainer.get_batch_samples(Probe(), iter(batches), 2, "cpu")
    assert samples == batches[:2]  # the step's micro-batches, in order, taken before any forward
    samples, _ = Trainer.get_batch_samples(Probe(), iter(batches[:1]), 2, "cpu")
    assert samples == batches[:1]  # a short last step stops at the end of the epoch


def test_trainer_load_from_checkpoint_signature():
    from transformers import Trainer

    assert _parameters(Trainer._load_from_checkpoint) == ["self", "resume_from_checkpoint", "model"]
    assert inspect.signature(Trainer._load_from_checkpoint).parameters["model"].default is None
    # Trainer still restores weights non-strictly, the reason ScaleSFTTrainer overrides it
    assert "strict" in inspect.getsource(Trainer._load_from_checkpoint)


def test_trainer_reads_loss_is_scaled_for_ga_and_parallel_sizes():
    from transformers import Trainer

    assert Trainer.loss_is_scaled_for_ga is None  # the class default our trainer overrides per instance
    assert "self.loss_is_scaled_for_ga" in inspect.getsource(Trainer.training_step)
    for name in ("get_tp_size", "get_cp_size", "get_sp_size"):
        assert _parameters(getattr(Trainer, name)) == ["self"], name


def test_sft_trainer_refuses_padding_free_vision_and_keeps_metrics():
    from trl import SFTTrainer

    source = inspect.getsource(SFTTrainer.__init__)
    # still refused upstream: ScaleSFTTrainer turns the flag off around super().__init__ and packs VLM batches itself
    assert "_is_vision_dataset and args.padding_free" in source
    assert 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}' in source


# ------------------------------------------------------------------------------------------- GRPOTrainer


def test_grpo_trainer_generation_hooks():
    from trl import GRPOTrainer

    assert _parameters(GRPOTrainer._generate_single_turn)[:5] == ["self", "prompt_ids", "images", "multimodal_fields",
                                                                  "num_generations"]
    assert _parameters(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert '"completion_mask"' in source  # ScaleGRPOTrainer counts generated tokens from it
    assert "self._generate(" in source and "_generate_single_turn" in inspect.getsource(GRPOTrainer)


# ------------------------------------------------------------------------------------------- callbacks, models


def test_exportable_state_round_trips_through_trainer_state(tmp_path):
    # the adaptive schedule's state: written by state() into trainer_state.json, read back by callback name
    from transformers import TrainerCallback, TrainerState
    from transformers.trainer_callback import ExportableState

    class Keeps(TrainerCallback, ExportableState):
        def __init__(self, value=0):
            self.value = value

        def state(self) -> dict:
            return {"args": {"value": self.value}, "attributes": {}}

    path = tmp_path / "trainer_state.json"
    TrainerState(global_step=3, stateful_callbacks=[Keeps(7)]).save_to_json(str(path))
    saved = TrainerState.load_from_json(str(path)).stateful_callbacks["Keeps"]
    assert saved == {"args": {"value": 7}, "attributes": {}}
    assert Keeps.from_state(saved).value == 7


def test_qwen_vl_get_rope_index_signature():
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    params = inspect.signature(Qwen2VLModel.get_rope_index).parameters
    assert list(params)[:2] == ["self", "input_ids"]
    assert {"mm_token_type_ids", "image_grid_thw"} <= set(params)


def test_argparse_internals_move_actions_between_groups():
    # cli.sft.group_options_first moves actions between help groups through these private attributes
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--late")
    group = parser.add_argument_group("first")
    for old in parser._action_groups:
        for action in list(old._group_actions):
            if action.dest == "late" and old is not group:
                old._group_actions.remove(action)
                group._group_actions.append(action)
    parser._action_groups.remove(group)
    parser._action_groups[1:1] = [group]
    help_text = parser.format_help()
    assert "first:\n  --late LATE\n\noptions:" in help_text  # moved into the group, which comes first
    assert [a.dest for a in parser._actions] == ["help", "late"]


# ------------------------------------------------------------------------------------------- post-head steps

# A line of a forward that changes ``logits`` after the LM head.
_ASSIGN_LOGITS = re.compile(r"^\s*logits\s*(=|\*=|/=)")
_DTYPE_ONLY = re.compile(r"^\s*logits\s*=\s*logits\.(float\(\)|to\([^)]*\))\s*$")


def steps_from_source(cls) -> tuple[str, ...] | str:
    """The post-head steps of ``cls.forward`` as ``HEAD_STEPS`` names them, read off its source; the line as written
    for a step the fused head does not know (``UNSUPPORTED_HEAD_STEPS``)."""
    lines = inspect.getsource(inspect.unwrap(cls.forward)).splitlines()
    head = next(i for i, line in enumerate(lines) if "self.lm_head(" in line)
    steps: list[str] = []
    for line in lines[head + 1:]:
        code = line.split("#")[0]
        if re.search(r"\bloss\b|\breturn\b", code):
            break
        if not _ASSIGN_LOGITS.match(code) or _DTYPE_ONLY.match(code):
            continue
        if "final_logit_softcapping" in code or "torch.tanh(logits)" in code:
            step = "final_logit_softcapping"  # three lines: / cap, tanh, * cap
        elif "final_logit_softcapping" in steps:
            return code.strip()  # a step after the softcap
        elif "logit_scale" in code:
            step = "logit_scale"
        elif "logits_scaling" in code:
            step = "logits_scaling"
        elif "output_multiplier" in code:
            step = "output_multiplier"
        else:
            return code.strip()
        if not steps or steps[-1] != step:
            steps.append(step)
    return tuple(steps)


def _expected(name: str) -> tuple[str, ...] | str:
    return UNSUPPORTED_HEAD_STEPS.get(name, HEAD_STEPS.get(name, ()))


# The classes of the conformance families (tests/families.py) and the tiny default: no post-head step.
FAMILY_CLASSES = ["Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
                  "Qwen3VLForConditionalGeneration", "Qwen3_5ForConditionalGeneration", "LlavaForConditionalGeneration",
                  "LlavaNextForConditionalGeneration", "Gemma3ForConditionalGeneration",
                  "Gemma4ForConditionalGeneration", "Idefics3ForConditionalGeneration", "Glm4vForConditionalGeneration",
                  "InternVLForConditionalGeneration", "Lfm2VlForConditionalGeneration", "LlamaForCausalLM"]


@pytest.mark.parametrize("name", sorted({*HEAD_STEPS, *UNSUPPORTED_HEAD_STEPS, *FAMILY_CLASSES}))
def test_head_steps_table_matches_the_class_source(name):
    cls = getattr(transformers, name, None)
    assert cls is not None, f"transformers {transformers.__version__} has no {name}: update head_transform.HEAD_STEPS"
    assert steps_from_source(cls) == _expected(name), (
        f"{name}.forward changed its steps after the LM head: update scale_vlm/head_transform.py")


def test_head_transform_reads_the_values_the_table_names():
    import transformers as tf

    def bare(cls, **attrs):  # the class without its weights: head_transform reads only the class and the config
        model = object.__new__(cls)
        model.__dict__.update(attrs)
        return model

    gemma = head_transform(bare(tf.Gemma3ForCausalLM, config=tf.Gemma3TextConfig(final_logit_softcapping=30.0)))
    assert (gemma.logit_scale, gemma.softcap, gemma.unsupported) == (1.0, 30.0, None)
    granite = head_transform(bare(tf.GraniteForCausalLM, config=tf.GraniteConfig(logits_scaling=4.0)))
    assert granite.logit_scale == pytest.approx(0.25) and granite.softcap is None
    cohere = head_transform(bare(tf.CohereForCausalLM, config=tf.CohereConfig(logit_scale=0.0625)))
    assert cohere.logit_scale == pytest.approx(0.0625)
    assert "applies" in head_transform(bare(tf.RecurrentGemmaForCausalLM, config=tf.RecurrentGemmaConfig())).unsupported

    class Subclass(tf.Gemma3ForCausalLM):  # a user's subclass without its own forward runs the parent's steps
        pass

    assert head_transform(bare(Subclass, config=tf.Gemma3TextConfig(final_logit_softcapping=5.0))).softcap == 5.0


@pytest.mark.slow
def test_every_transformers_class_with_an_lm_head_is_in_the_table():
    """Every model class of the installed transformers whose forward calls ``self.lm_head`` (about 3 minutes: it
    imports every modeling module)."""
    import transformers.models as models
    from transformers import PreTrainedModel

    checked, wrong = 0, []
    for info in pkgutil.iter_modules(models.__path__):
        try:
            module = importlib.import_module(f"transformers.models.{info.name}.modeling_{info.name}")
        except Exception:  # noqa: BLE001 - a module whose optional dependency is missing has no class to check here
            continue
        for name, cls in vars(module).items():
            if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel) and cls.__module__ == module.__name__):
                continue
            try:
                source = inspect.getsource(inspect.unwrap(cls.forward))
            except (OSError, TypeError):
                continue
            if "self.lm_head(" not in source:
                continue
            checked += 1
            if steps_from_source(cls) != _expected(name):
                wrong.append((name, steps_from_source(cls), _expected(name)))
    assert checked > 300, checked
    assert not wrong, f"update scale_vlm/head_transform.py: {wrong}"
