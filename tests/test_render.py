"""Segment assignment with real processors: exact decoded segments, boundary tokens, EOS, bad examples."""

import copy
import json

import pytest
from conftest import QUESTION, make_image, messages_row
from datasets import Dataset
from PIL import Image

from scale_vlm.data.formats import ExampleError, normalize_example
from scale_vlm.data.prepare import prepare_dataset
from scale_vlm.data.render import render_example, split_response
from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK, Tags


def _segments(rendered, tokenizer):
    pick = lambda seg: [t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s == seg]
    return tokenizer.decode(pick(SEGMENT_THINK)), tokenizer.decode(pick(SEGMENT_ANSWER)), pick


def test_qwen_segments_decode_exactly(tiny_qwen):
    _, processor = tiny_qwen
    tok = processor.tokenizer
    response = "<think>I look at the image. The square is green, option (B).</think><answer>(B)</answer>"
    rendered = render_example(normalize_example(messages_row(1, response)), processor)
    think, answer, pick = _segments(rendered, tok)
    # '>' of </think> merges with '<' of <answer> into one token '><', which goes to the answer
    assert think == "<think>I look at the image. The square is green, option (B).</think"
    # the end-of-turn token closes the answer segment and stays supervised
    assert answer == "><answer>(B)</answer><|im_end|>"
    assert think + answer == response + "<|im_end|>"
    assert pick(SEGMENT_ANSWER)[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    # labels are the ids on supervised tokens, -100 elsewhere (prompt, image tokens, trailing newline)
    for tok_id, label, seg in zip(rendered.input_ids, rendered.labels, rendered.segment_ids):
        assert label == (tok_id if seg != SEGMENT_PROMPT else -100)
    image_id = processor.image_token_id
    assert rendered.input_ids.count(image_id) == 9  # 48x48 image -> 3x3 merged patches
    assert all(s == SEGMENT_PROMPT for t, s in zip(rendered.input_ids, rendered.segment_ids) if t == image_id)
    assert rendered.segment_ids[-1] == SEGMENT_PROMPT  # "\n" after <|im_end|> is template, not response
    assert len(rendered.extra["mm_token_type_ids"]) == len(rendered.input_ids)


def test_straddling_tokens_go_to_the_answer(tiny_qwen):
    _, processor = tiny_qwen
    tok = processor.tokenizer
    response = "<think>The square is blue.</think><answer>(C)</answer>"
    rendered = render_example(normalize_example(messages_row(2, response)), processor)
    pieces = [(tok.convert_ids_to_tokens(t), s) for t, s in zip(rendered.input_ids, rendered.segment_ids) if s]
    tokens = [p for p, _ in pieces]
    # the byte-level BPE merges tag characters with their neighbours, as Qwen's real vocabulary does
    i = tokens.index("><")
    assert tokens[i - 2 : i + 3] == ["</", "think", "><", "answer", ">("]
    assert pieces[i - 1][1] == SEGMENT_THINK  # 'think' of </think>
    assert pieces[i][1] == SEGMENT_ANSWER  # '><' straddles </think> and <answer>: every answer character stays
    assert pieces[i + 2][1] == SEGMENT_ANSWER  # '>(' of <answer>(C)


def test_whitespace_between_segments_belongs_to_the_answer(tiny_qwen):
    _, processor = tiny_qwen
    response = "<think>The square is red.</think>\n\n<answer>(A)</answer>"
    rendered = render_example(normalize_example(messages_row(0, response)), processor)
    think, answer, _ = _segments(rendered, processor.tokenizer)
    assert think == "<think>The square is red.</think>"
    assert answer == "\n\n<answer>(A)</answer><|im_end|>"


def test_llava_segments_and_appended_eos(tiny_llava):
    _, processor = tiny_llava
    response = "<think>The square is yellow.</think><answer>(D)</answer>"
    rendered = render_example(normalize_example(messages_row(3, response)), processor)
    think, answer, pick = _segments(rendered, processor.tokenizer)
    assert think == "<think>The square is yellow.</think"
    assert answer == "><answer>(D)</answer><|endoftext|>"  # the template's EOS is supervised
    assert rendered.input_ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 16


def test_configurable_tag_names(tiny_qwen):
    _, processor = tiny_qwen
    tags = Tags("<reasoning>", "</reasoning>", "<final>", "</final>")
    response = "<reasoning>It is red.</reasoning><final>(A)</final>"
    rendered = render_example(normalize_example(messages_row(0, response)), processor, tags=tags)
    think, answer, _ = _segments(rendered, processor.tokenizer)
    assert think + answer == response + "<|im_end|>"
    assert think.startswith("<reasoning>It is red.</reasoning") and answer.endswith("(A)</final><|im_end|>")
    assert "(A)" not in think
    with pytest.raises(ExampleError, match="missing tag '<think>'"):
        render_example(normalize_example(messages_row(0, response)), processor)


def test_all_formats_render_identically(tiny_qwen, tmp_path):
    _, processor = tiny_qwen
    response = "<think>The square is green.</think><answer>(B)</answer>"
    img_path = tmp_path / "img.png"
    make_image(1).save(img_path)
    rows = [
        messages_row(1, response),
        {"conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": response}],
         "image": "img.png"},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
         "completion": [{"role": "assistant", "content": [{"type": "text", "text": response}]}], "images": [make_image(1)]},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
         "completion": response, "image": str(img_path)},
    ]
    rendered = [render_example(normalize_example(r, i, str(tmp_path)), processor) for i, r in enumerate(rows)]
    for r in rendered[1:]:
        assert r.input_ids == rendered[0].input_ids
        assert r.segment_ids == rendered[0].segment_ids


def test_json_file_with_image_paths_trains_through_prepare(tiny_qwen, tmp_path):
    from scale_vlm.data.prepare import load_training_dataset

    _, processor = tiny_qwen
    rows = []
    for i in range(3):
        make_image(i).save(tmp_path / f"{i}.png")
        rows.append({"conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                       {"from": "gpt", "value": "<think>look</think><answer>(A)</answer>"}],
                     "image": f"{i}.png"})
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    ds, root = load_training_dataset(str(path))
    prepared, report = prepare_dataset(ds, processor, image_root=root)
    assert report.kept == 3 and len(prepared) == 3
    assert set(prepared.column_names) >= {"input_ids", "labels", "segment_ids", "images"}


BAD_RESPONSES = {
    "missing_tag": "<think>no answer block here</think>",
    "duplicate_tag": "<think>a</think><think>b</think><answer>(A)</answer>",
    "nested_tags": "<think>a <answer>(A)</answer> b</think>",
    "misordered_tags": "<answer>(A)</answer><think>a</think>",
    "empty_answer": "<think>a</think><answer>  </answer>",
    "empty_think": "<think> </think><answer>(A)</answer>",
    "text_outside_tags": "<think>a</think> so <answer>(A)</answer>",
}


@pytest.mark.parametrize("reason", sorted(BAD_RESPONSES))
def test_bad_tags_raise_with_index_and_reason(tiny_qwen, reason):
    _, processor = tiny_qwen
    ds = Dataset.from_list([messages_row(0), messages_row(1, BAD_RESPONSES[reason]), messages_row(2)])
    with pytest.raises(ExampleError, match=r"^example 1: ") as info:
        prepare_dataset(ds, processor)
    assert info.value.reason == reason and info.value.index == 1


def test_unloadable_image_and_truncation_errors(tiny_qwen, tmp_path):
    _, processor = tiny_qwen
    broken = tmp_path / "broken.png"
    make_image(0).save(broken)
    broken.write_bytes(broken.read_bytes()[:40])  # truncated PNG
    row = messages_row(0)
    row["images"] = [str(broken)]
    with pytest.raises(ExampleError, match="example 0: image could not be loaded"):
        normalize_example(row, 0)
    row["images"] = ["does-not-exist.png"]
    with pytest.raises(ExampleError, match="example 0: image file not found"):
        normalize_example(row, 0, str(tmp_path))
    long_row = messages_row(0, "<think>" + "The square is red. " * 40 + "</think><answer>(A)</answer>")
    with pytest.raises(ExampleError, match="exceed max_length=60: truncation would cut into the") as info:
        render_example(normalize_example(long_row, 4), processor, max_length=60, index=4)
    assert info.value.reason == "truncated_answer"


def test_skip_policy_counts_and_reports(tiny_qwen, tmp_path):
    _, processor = tiny_qwen
    rows = [messages_row(0), messages_row(1, BAD_RESPONSES["missing_tag"]), messages_row(2),
            messages_row(3, BAD_RESPONSES["empty_answer"]), messages_row(4)]
    for i, row in enumerate(rows):  # images as paths, the one of example 2 missing
        if i != 2:
            row["images"][0].save(tmp_path / f"{i}.png")
        row["images"] = [f"{i}.png"]
    prepared, report = prepare_dataset(Dataset.from_list(rows), processor, policy="skip", image_root=str(tmp_path))
    assert len(prepared) == 2 and report.kept == 2 and report.total == 5
    assert dict(report.skipped) == {"missing_tag": 1, "image_missing": 1, "empty_answer": 1}
    assert "skipped 3" in report.summary() and "example 1: missing tag" in report.summary()


def test_split_response_returns_end_of_think():
    r = "<think>ab</think><answer>c</answer>"
    assert r[: split_response(r)] == "<think>ab</think>"


def test_processor_snapshot_listing_a_video_processor_loads_without_torchvision(tiny_qwen_dir, tmp_path):
    """Qwen2-VL snapshots ship video_preprocessor_config.json; image-only use must not need torchvision."""
    import shutil

    from scale_vlm.processors import load_processor

    snap = tmp_path / "snapshot"
    shutil.copytree(tiny_qwen_dir, snap)
    (snap / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2VLProcessor",
        "patch_size": 8, "temporal_patch_size": 1, "merge_size": 2,
    }))
    processor = load_processor(str(snap))
    assert type(processor).__name__ == "Qwen2VLProcessor"
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[Image.new("RGB", (48, 48))])
    assert list(enc["image_grid_thw"][0]) == [1, 6, 6]


def test_prepare_without_progress_bars_gives_the_same_rows(tiny_qwen):
    from datasets import is_progress_bar_enabled

    _, processor = tiny_qwen
    ds = Dataset.from_list([messages_row(i) for i in range(3)])
    quiet, _ = prepare_dataset(ds, processor, progress=False)
    loud, _ = prepare_dataset(ds, processor)
    assert quiet["segment_ids"] == loud["segment_ids"] and quiet["input_ids"] == loud["input_ids"]
    assert is_progress_bar_enabled()  # switched back on afterwards


# --- The alignment rule: templates whose assistant turn does not begin exactly at the end of the generation prompt.
# Minimal templates reproducing each real family's behaviour (the real templates are exercised in
# tests/test_families.py): LLaVA-1.6-Mistral writes ' ' + response + '</s> ' and has no generation prompt; Qwen3's
# thinking templates open '<think>\n' in the generation prompt and rewrite the reasoning's surrounding whitespace;
# Gemma-3 ends a turn with '<end_of_turn>', an added token marked special but not a named special token.
LEADING_SPACE_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %} [/INST]{% else %}{{ ' ' + m['content'][0]['text'] + '<|im_end|> ' }}{% endif %}{% endfor %}"
)
THINK_OPENED_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'user' %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% else %}{% set c = m['content'][0]['text'] %}"
    "{{ '<think>\\n' + c.split('</think>')[0].split('<think>')[-1].strip('\\n') + '\\n</think>\\n\\n' + c.split('</think>')[-1].lstrip('\\n') }}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.fixture
def with_template(tiny_qwen):
    _, processor = tiny_qwen
    saved = processor.chat_template

    def use(template):
        processor.chat_template = template
        return processor

    yield use
    processor.chat_template = saved


def test_leading_space_template_is_aligned_and_the_space_supervised(with_template):
    processor = with_template(LEADING_SPACE_TEMPLATE)
    tok = processor.tokenizer
    response = "<think>The square is green.</think><answer>(B)</answer>"
    rendered = render_example(normalize_example(messages_row(1, response)), processor)
    think, answer, _ = _segments(rendered, tok)
    # the template's leading space is generated by the model after '[/INST]', so it is supervised (think)
    assert think == " <think>The square is green.</think"
    assert answer == "><answer>(B)</answer><|im_end|>"
    # nothing inserted, nothing lost: the ids are the processor's own tokenization of the conversation text
    expected = processor(text=[rendered.text], images=[make_image(1)], add_special_tokens=False)["input_ids"][0]
    assert rendered.input_ids == list(expected)
    assert rendered.segment_ids[-1] == SEGMENT_PROMPT  # the trailing ' ' after the end of turn is template text


def test_generation_prompt_that_opens_think_keeps_the_tag_in_the_prompt(with_template):
    processor = with_template(THINK_OPENED_TEMPLATE)
    tok = processor.tokenizer
    response = "<think>The square is red.</think><answer>(A)</answer>"
    rendered = render_example(normalize_example(messages_row(0, response)), processor)
    think, answer, _ = _segments(rendered, tok)
    assert rendered.text.endswith("<|im_start|>assistant\n<think>\nThe square is red.\n</think>\n\n<answer>(A)</answer><|im_end|>\n")
    # '<think>\n' belongs to the generation prompt the model is given; it learns from the reasoning on, in the
    # template's own whitespace, and the whitespace the template puts between the blocks is answer
    assert think == "The square is red.\n</think>"
    assert answer == "\n\n<answer>(A)</answer><|im_end|>"


def test_template_that_changes_the_response_is_refused_with_the_example(with_template):
    processor = with_template(LEADING_SPACE_TEMPLATE.replace("m['content'][0]['text']", "m['content'][0]['text'] | upper"))
    with pytest.raises(ExampleError, match=r"example 7: the chat template of 'Qwen2VLProcessor' does not render the response .*"
                       r"'think>I look.*' became 'THINK>I LOOK.*only whitespace may differ"):
        render_example(normalize_example(messages_row(1)), processor, index=7)


def test_added_special_token_ends_the_turn_and_is_supervised(tiny_qwen):
    from transformers import AddedToken

    from scale_vlm.processors import build_image_only_processor

    _, processor = tiny_qwen
    tokenizer = copy.deepcopy(processor.tokenizer)  # the shared fixture's tokenizer stays untouched
    tokenizer.add_tokens([AddedToken("<end_of_turn>", special=True, normalized=False)])
    end_id = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_id not in tokenizer.all_special_ids  # as in Gemma-3: special, but not a named special token
    template = processor.chat_template.replace("<|im_end|>", "<end_of_turn>")
    gemma_like = build_image_only_processor(type(processor), processor.image_processor, tokenizer, chat_template=template)
    rendered = render_example(normalize_example(messages_row(1)), gemma_like)
    supervised = [t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s]
    assert supervised[-1] == end_id  # the template's end of turn is learned ...
    assert tokenizer.eos_token_id not in rendered.input_ids  # ... and no EOS the template never writes is added


# -- reasoning data shapes: a separate reasoning field, tags in the content, an untagged answer ----------------------

def _field_row(i: int, reasoning: str, content: str, key: str = "reasoning_content") -> dict:
    """TRL's reasoning shape: user content a list of parts, assistant content a plain string + a reasoning field."""
    row = messages_row(i)
    row["messages"][1] = {"role": "assistant", "content": content, key: reasoning}
    return row


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_field_renders_like_tags_in_the_content(tiny_qwen, key):
    _, processor = tiny_qwen
    reasoning = "I look at the image. The square is green, option (B)."
    tagged = render_example(normalize_example(messages_row(1, f"<think>{reasoning}</think><answer>(B)</answer>")), processor)
    example = normalize_example(_field_row(1, reasoning, "<answer>(B)</answer>", key))
    assert example.response == f"<think>{reasoning}</think><answer>(B)</answer>"
    from_field = render_example(example, processor)
    assert from_field.input_ids == tagged.input_ids and from_field.segment_ids == tagged.segment_ids
    think, answer, _ = _segments(from_field, processor.tokenizer)
    assert (think, answer) == (f"<think>{reasoning}</think", "><answer>(B)</answer><|im_end|>")


def test_reasoning_field_and_think_tags_together_are_refused():
    row = _field_row(0, "The square is red.", "<think>again</think><answer>(A)</answer>")
    with pytest.raises(ExampleError, match="example 3: the response has both a reasoning field and '<think>'") as err:
        normalize_example(row, 3)
    assert err.value.reason == "duplicate_reasoning"


def test_untagged_answer_needs_the_option(tiny_qwen):
    _, processor = tiny_qwen
    response = "<think>The square is green, so the answer is option B.</think> Final Answer: (B)"
    example = normalize_example(messages_row(1, response))
    with pytest.raises(ExampleError, match="missing tag '<answer>'"):
        render_example(example, processor)
    tags = Tags(untagged_answer=True)
    rendered = render_example(example, processor, tags)
    think, answer, _ = _segments(rendered, processor.tokenizer)
    assert think == "<think>The square is green, so the answer is option B.</think>"
    assert answer == " Final Answer: (B)<|im_end|>"  # everything after the reasoning, through the end of turn
    assert split_response(response, tags) == response.index(" Final")
    with pytest.raises(ExampleError, match="empty answer segment"):
        split_response("<think>reasoning</think>  ", tags)
    # an answer block is still checked as one when the option is on
    with pytest.raises(ExampleError, match="missing tag '</answer>'"):
        split_response("<think>reasoning</think><answer>(B)", tags)


def test_inspect_data_reads_trl_rows_with_string_assistant_content(tiny_qwen_dir, tmp_path, capsys):
    """The reported bug: user content a list of parts, assistant content a string. Arrow cannot hold both in one
    table, so the loader keeps raw JSON rows; inspect-data refused them ("no supported columns ... ['_raw_json']")
    while sft trained on them. Both shapes of reasoning, one file."""
    from scale_vlm.cli import main

    rows = []
    for i in range(3):
        row = messages_row(i)
        row["images"][0].save(tmp_path / f"img{i}.png")
        row["images"] = [f"img{i}.png"]
        if i == 1:
            row["messages"][1] = {"role": "assistant", "content": "<answer>(B)</answer>",
                                  "reasoning_content": "The square is green."}
        else:
            row["messages"][1]["content"] = f"<think>The square is {['red', '', 'blue'][i]}.</think><answer>({'ABC'[i]})</answer>"
        rows.append(row)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["examples"]
    assert [e["think_text"] + e["answer_text"] for e in shown] == [
        "<think>The square is red.</think><answer>(A)</answer><|im_end|>",
        "<think>The square is green.</think><answer>(B)</answer><|im_end|>",
        "<think>The square is blue.</think><answer>(C)</answer><|im_end|>",
    ]
    # the same file through prepare_dataset (what sft runs) keeps every row with the same tokens
    from scale_vlm.data.prepare import load_rows

    dataset, root = load_rows(str(path))
    assert dataset.column_names == ["_raw_json"]
    prepared, report = prepare_dataset(dataset, _processor_of(tiny_qwen_dir), image_root=root, progress=False)
    assert report.kept == 3


def _processor_of(path):
    from scale_vlm.processors import load_processor

    return load_processor(path)


def test_inspect_data_untagged_answers_need_the_option(tiny_qwen_dir, tmp_path, capsys):
    from scale_vlm.cli import main

    row = messages_row(0)
    row["images"][0].save(tmp_path / "img0.png")
    row["images"] = ["img0.png"]
    row["messages"][1]["content"] = "<think>The square is red.</think>\nFinal Answer: (A)"
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row))
    args = ["inspect-data", "--model_name_or_path", tiny_qwen_dir, "--dataset_name", str(path), "--json"]
    assert main(args) == 2
    assert "example 0: missing tag '<answer>' in the response" in capsys.readouterr().err
    assert main(args + ["--untagged_answer"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["examples"]
    assert (shown["think_text"], shown["answer_text"]) == ("<think>The square is red.</think>", "\nFinal Answer: (A)<|im_end|>")
