"""GRPO rewards: exact values for a table of completions, both completion forms, and agreement with the evaluator."""

import pytest

from scale_vlm.eval.adapters import EvalExample
from scale_vlm.eval.evaluate import score_outputs
from scale_vlm.rewards import accuracy_reward, completion_text, format_reward, make_reward_funcs
from scale_vlm.segments import Tags

CHOICES = ["cat", "dog", "bird"]
# (completion, gold, choices, accuracy, format)
TABLE = [
    ("<think>two legs, wings</think><answer>C</answer>", "C", CHOICES, 1.0, 1.0),
    ("<think>x</think><answer>(c)</answer>", "C", CHOICES, 1.0, 1.0),
    ("<think>x</think><answer>bird</answer>", "C", CHOICES, 1.0, 1.0),  # option text names the gold option
    ("<think>x</think><answer>B</answer>", "C", CHOICES, 0.0, 1.0),
    ("<think>x</think> <answer>3</answer>\n", "3", [], 1.0, 1.0),  # whitespace between/after blocks is fine
    ("<think>x</think><answer>three objects</answer>", "3", [], 1.0, 1.0),
    ("<answer>3</answer>", "3", [], 1.0, 0.0),  # correct but no think block
    ("<think>x</think>3", "3", [], 1.0, 0.0),  # bare answer still scored, format fails
    ("<think>x</think><answer>3", "3", [], 1.0, 0.0),  # truncated answer block
    ("<think>x<answer>3</answer>", "3", [], 1.0, 0.0),  # unclosed think runs to <answer>: scored, format fails
    ("<think>x <answer>2</answer></think><answer>3</answer>", "3", [], 1.0, 0.0),  # answer tag nested in think
    ("<think>x</think><answer>2</answer><answer>3</answer>", "3", [], 1.0, 0.0),  # last block counts; 2 blocks
    ("<think>x</think><answer></answer>", "3", [], 0.0, 0.0),
    ("Sure! <think>x</think><answer>3</answer>", "3", [], 1.0, 0.0),  # text before the think block
    ("<answer>3</answer><think>x</think>", "3", [], 1.0, 0.0),  # misordered
    ("", "3", [], 0.0, 0.0),
    ("<THINK>x</THINK><Answer>red</Answer>", "red", [], 1.0, 1.0),  # tags are case-insensitive
]


@pytest.mark.parametrize("completion,gold,choices,acc,fmt", TABLE)
def test_reward_table_string_and_conversational(completion, gold, choices, acc, fmt):
    conversational = [{"role": "assistant", "content": completion}]
    typed = [{"role": "assistant", "content": [{"type": "text", "text": completion}]}]
    for form in (completion, conversational, typed):
        assert accuracy_reward(prompts=["p"], completions=[form], answer=[gold], choices=[choices]) == [acc]
        assert format_reward(prompts=["p"], completions=[form]) == [fmt]


def test_accuracy_reward_equals_evaluator_correctness():
    outputs = [row[0] for row in TABLE]
    examples = [EvalExample(id=str(i), images=[], prompt="q", gold=g, choices=list(c))
                for i, (_, g, c, _, _) in enumerate(TABLE)]

    class Tok:  # score_outputs counts tokens; any tokenizer works for correctness
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    rows = score_outputs(examples, outputs, Tok())
    rewards = accuracy_reward(prompts=["q"] * len(outputs), completions=outputs, answer=[e.gold for e in examples],
                              choices=[e.choices for e in examples])
    assert rewards == [1.0 if r["correct"] else 0.0 for r in rows]


def test_choices_optional_and_extra_kwargs_ignored():
    out = accuracy_reward(prompts=["p"], completions=["<think>t</think><answer>dog</answer>"], answer=["dog"],
                          trainer_state=None, log_metric=lambda *a: None, completion_ids=[[1]])
    assert out == [1.0]


def test_make_reward_funcs_names_and_custom_tags():
    tags = Tags("<reasoning>", "</reasoning>", "<final>", "</final>")
    acc, fmt = make_reward_funcs(("accuracy", "format"), tags=tags)
    assert (acc.__name__, fmt.__name__) == ("accuracy_reward", "format_reward")
    done = "<reasoning>r</reasoning><final>B</final>"
    assert acc(prompts=["p"], completions=[done], answer=["B"], choices=[["x", "y"]]) == [1.0]
    assert fmt(prompts=["p"], completions=[done]) == [1.0]
    assert fmt(prompts=["p"], completions=["<think>r</think><answer>B</answer>"]) == [0.0]
    with pytest.raises(ValueError):
        make_reward_funcs(("length",))


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        accuracy_reward(prompts=["p", "q"], completions=["a", "b"], answer=["a"])
