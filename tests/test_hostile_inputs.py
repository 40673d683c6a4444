"""Hostile inputs through rendering, training and evaluation: a clear error naming the example, or a counted skip.

The corpus is generated into ``tmp_path`` by ``hostile_corpus.py`` (nothing big is committed).
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset
from hostile_corpus import GARBAGE_OUTPUTS, build_eval_rows, build_training_cases, write_images
from reliability_support import good_row, load_tiny_processor, tiny_model_dir, write_good_jsonl, write_jsonl

from scale_vlm.data.formats import ExampleError, load_image, normalize_example
from scale_vlm.data.prepare import RAW_JSON_COLUMN, load_training_dataset, prepare_dataset
from scale_vlm.data.render import render_example
from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, build_training_cases(root)


@pytest.fixture(scope="module")
def processor():
    return load_tiny_processor()


def test_every_case_renders_or_fails_with_its_reason(corpus, processor):
    root, cases = corpus
    assert len(cases) >= 45
    for index, case in enumerate(cases):
        try:
            example = normalize_example(case.row, index, str(root))
            rendered = render_example(example, processor, max_length=MAX_LENGTH, index=index)
        except ExampleError as err:
            assert err.reason == case.reason, f"{case.name}: got {err.reason} ({err}), expected {case.reason}"
            assert err.index == index
            assert str(err).startswith(f"example {index}: "), case.name
            assert case.message in str(err), f"{case.name}: {err}"
            continue
        assert case.reason is None, f"{case.name}: rendered, but {case.reason} was expected"
        segs = rendered.segment_ids
        assert SEGMENT_THINK in segs and SEGMENT_ANSWER in segs, case.name
        assert len(rendered.input_ids) <= MAX_LENGTH
        assert all((label == -100) == (seg == SEGMENT_PROMPT) for label, seg in zip(rendered.labels, segs))


def test_awkward_images_become_rgb_without_losing_content(tmp_path):
    paths = write_images(tmp_path)
    for name in ("cmyk.jpg", "rgba.png", "palette_transparent.png", "grey16.png", "tiny_1x1.png"):
        img = load_image(str(paths[name]), 0)
        assert img.mode == "RGB", name
    # RGBA is composited on white: half-transparent red -> (255, 127, 127)
    assert load_image(str(paths["rgba.png"])).getpixel((0, 0)) == (255, 127, 127)
    # 16-bit greyscale is rescaled to 8 bits, not clipped to white
    grey = np.asarray(load_image(str(paths["grey16.png"])))[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 100
    # an in-memory zero-sized image (files of zero size are refused by PIL when opening)
    from PIL import Image

    with pytest.raises(ExampleError, match=r"^example 4: image has zero size 0x0$") as info:
        load_image(Image.new("RGB", (0, 0)), 4)
    assert info.value.reason == "image_empty"
    # CMYK (0, 255, 255, 0) is red
    r, g, b = load_image(str(paths["cmyk.jpg"])).getpixel((5, 5))
    assert r > 200 and g < 40 and b < 40


def test_policy_error_names_the_first_bad_example(corpus, processor):
    root, cases = corpus
    bad = next(c for c in cases if c.name == "duplicated_answer")
    ds = Dataset.from_list([good_row(0, "images/good.png"), good_row(1, "images/good.png"), bad.row])
    with pytest.raises(ExampleError) as info:
        prepare_dataset(ds, processor, max_length=MAX_LENGTH, policy="error", image_root=str(root))
    assert info.value.index == 2 and info.value.reason == "duplicate_tag"
    assert str(info.value) == "example 2: tag '<answer>' appears 2 times in the response"


def test_policy_skip_counts_every_bad_example_from_a_messy_jsonl(corpus, processor):
    root, cases = corpus
    good = [good_row(i, "images/good.png") for i in range(3)]
    path = write_jsonl(root / "mixed.jsonl", good + [c.row for c in cases])
    # Rows of different shapes (string vs list content, other columns) cannot share one Arrow table: they are kept
    # as JSON text and decoded per example instead of crashing the load.
    ds, image_root = load_training_dataset(str(path))
    assert ds.column_names == [RAW_JSON_COLUMN] and len(ds) == len(cases) + 3
    prepared, report = prepare_dataset(ds, processor, max_length=MAX_LENGTH, policy="skip", image_root=image_root)
    expected_kept = 3 + sum(c.reason is None for c in cases)
    assert report.total == len(cases) + 3
    assert report.kept == len(prepared) == expected_kept
    assert report.num_skipped == len(cases) + 3 - expected_kept
    expected = Counter(c.reason for c in cases if c.reason is not None)
    assert dict(report.skipped) == dict(expected)
    assert "skipped" in report.summary() and "example " in report.summary()
    # the first error of the raw-JSON path also names its example under the error policy
    with pytest.raises(ExampleError, match=r"^example 3: missing tag '<think>'"):
        prepare_dataset(ds, processor, max_length=MAX_LENGTH, policy="error", image_root=image_root)


def test_non_utf8_bytes_and_bom_in_jsonl(tmp_path, processor):
    path = write_good_jsonl(tmp_path, 2)
    lines = path.read_bytes().splitlines()
    # a BOM at the start, and a latin-1 byte (invalid UTF-8) inside the second example's think text
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    lines[1] = lines[1].replace(b"I look at", b"I look\xff\xfe at")
    path.write_bytes(b"\n".join(lines) + b"\n")
    ds, root = load_training_dataset(str(path))
    assert len(ds) == 2
    prepared, report = prepare_dataset(ds, processor, max_length=MAX_LENGTH, policy="error", image_root=root)
    assert report.kept == 2
    response = normalize_example(ds[1], 1, root).response
    assert "I look\ufffd\ufffd at" in response


def test_invalid_json_line_is_named(tmp_path):
    path = write_good_jsonl(tmp_path, 2)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"messages": [oops\n')
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        load_training_dataset(str(path))


def test_empty_datasets(tmp_path, processor):
    with pytest.raises(ValueError, match="the training dataset is empty"):
        prepare_dataset(Dataset.from_list([]), processor)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    ds, root = load_training_dataset(str(empty))
    with pytest.raises(ValueError, match="the training dataset is empty"):
        prepare_dataset(ds, processor)
    # every example bad under the skip policy: a clear error with the counts, not an empty training run
    bad = Dataset.from_list([{"question": "q", "answer": "a"}] * 3)
    with pytest.raises(ValueError, match=r"no usable example left.*prepared 0/3.*unknown_format=3"):
        prepare_dataset(bad, processor, policy="skip")


def test_training_on_mixed_data_with_skip_policy_gives_finite_losses(corpus, tmp_path):
    from transformers import TrainerCallback

    from scale_vlm.sft_config import ScaleSFTConfig
    from scale_vlm.sft_trainer import ScaleSFTTrainer
    from scale_vlm.tiny.shipped import load_base

    root, cases = corpus
    # a mixed file: good examples and every bad or awkward one, in one JSONL
    good = [good_row(i, "images/good.png") for i in range(4)]
    path = write_jsonl(root / "train_mixed.jsonl", good + [c.row for c in cases])
    ds, image_root = load_training_dataset(str(path))
    model, processor = load_base(tiny_model_dir())

    raw_losses = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raw_losses.append(trainer._last_raw_loss)

    class Trainer(ScaleSFTTrainer):
        def compute_loss(self, *a, **kw):
            loss = super().compute_loss(*a, **kw)
            self._last_raw_loss = float(loss.detach())
            return loss

    args = ScaleSFTConfig(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
        bad_example_policy="skip", image_root=image_root, save_strategy="no", use_cpu=True, disable_tqdm=True,
        logging_nan_inf_filter=False, max_length=MAX_LENGTH, seed=0, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=processor, callbacks=[Watch()])
    report = trainer.preparation_reports["train"]
    assert report.kept == 4 + sum(c.reason is None for c in cases)
    assert report.num_skipped == sum(c.reason is not None for c in cases)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and len(raw_losses) == 3
    for h in logs:
        for key in ("loss", "loss_think", "loss_answer", "grad_norm"):
            assert math.isfinite(h[key]) and h[key] > 0, (key, h)
    assert all(math.isfinite(x) and x > 0 for x in raw_losses)


# ------------------------------------------------------------------------------------------------ evaluation


def test_parse_output_never_raises_on_garbage():
    from scale_vlm.parsing import is_well_formed, parse_output

    for text in GARBAGE_OUTPUTS:
        parsed = parse_output(text)
        assert parsed.answer is None or isinstance(parsed.answer, str)
        assert isinstance(is_well_formed(text), bool)
    assert parse_output(GARBAGE_OUTPUTS[0]).malformed


def test_eval_rows_with_bad_images_give_a_clear_error(tmp_path):
    from scale_vlm.eval.adapters import builtin_examples, load_eval_dataset

    rows = build_eval_rows(tmp_path)
    for row in rows:
        with pytest.raises(ValueError, match=r"^built-in benchmark example 0: cannot load image") as info:
            builtin_examples([row], base_dir=tmp_path)
        assert row["image"] in str(info.value)
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"example 0: cannot load image 'images/nope.png'"):
        load_eval_dataset(str(path))


def test_eval_cli_reports_bad_image_without_traceback(tmp_path, capsys):
    from scale_vlm.cli.eval import main

    rows = build_eval_rows(tmp_path)
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(rows[1]) + "\n")
    rc = main(["--model_name_or_path", str(tiny_model_dir()), "--dataset_name", str(path), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("scale-vlm eval: error: built-in benchmark example 0: cannot load image")
    assert "Traceback" not in err


def test_eval_jsonl_with_non_utf8_bytes_loads(tmp_path):
    from scale_vlm.eval.adapters import load_eval_dataset

    rows = build_eval_rows(tmp_path)
    row = {**rows[0], "image": "images/good.png", "prompt": "How many? caf\u00e9"}
    path = tmp_path / "eval.jsonl"
    path.write_bytes(json.dumps(row, ensure_ascii=False).encode("utf-8").replace("\u00e9".encode(), b"\xe9") + b"\n")
    examples = load_eval_dataset(str(path))
    assert examples[0].prompt.endswith("caf\ufffd")


# ------------------------------------------------------------------------------------------ whole files


def test_file_shapes_load_as_written_or_fail_clearly(tmp_path, caplog, monkeypatch):
    import logging

    from hostile_corpus import build_file_cases

    from scale_vlm.data import prepare

    # a misspelt local path must never become a hub lookup
    monkeypatch.setattr(prepare, "load_dataset", lambda *a, **k: pytest.fail("hub lookup for a local path"))
    caplog.set_level(logging.WARNING, logger="scale_vlm")
    for case in build_file_cases(tmp_path):
        caplog.clear()
        if case.rows is None:
            with pytest.raises((ValueError, FileNotFoundError), match=None) as info:
                load_training_dataset(str(case.path), case.split)
            assert case.message in str(info.value), (case.name, info.value)
            continue
        ds, _ = load_training_dataset(str(case.path), case.split)
        assert len(ds) == case.rows, case.name
        if case.message:
            assert case.message in caplog.text, (case.name, caplog.text)


def test_ambiguous_eval_answers_are_refused_unless_the_format_is_given(tmp_path):
    from hostile_corpus import AMBIGUOUS_EVAL_CASES

    from scale_vlm.eval.adapters import ColumnMapping, load_eval_dataset

    for i, (row, expected) in enumerate(AMBIGUOUS_EVAL_CASES):
        path = write_jsonl(tmp_path / f"amb{i}.jsonl", [{**row, "image": None}])
        mapping = ColumnMapping(choices_column="choices")
        for answer_format, gold in expected.items():
            if gold == "error":
                with pytest.raises(ValueError, match=r"^example 0: answer "):
                    load_eval_dataset(str(path), columns=mapping, answer_format=answer_format)
            else:
                assert load_eval_dataset(str(path), columns=mapping, answer_format=answer_format)[0].gold == gold, (
                    row, answer_format)
