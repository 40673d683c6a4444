"""The built-in benchmark: determinism, schema, balance, token imbalance, teacher errors, writers."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter

import pytest

from scale_vlm.bench import (
    BenchConfig,
    build_benchmark,
    iter_items,
    make_benchmark,
    to_training_format,
    write_messages_jsonl,
    write_sharegpt_json,
)
from scale_vlm.prompts import OPTION_LETTERS
from scale_vlm.segments import DEFAULT_TAGS

COLUMNS = {"id", "image", "prompt", "response", "answer", "choices", "category"}


def items(n=1200, **kw):
    return list(iter_items(BenchConfig(num_examples=n, **kw)))


@pytest.fixture(scope="module")
def tokenizer():
    from scale_vlm.tiny.corpus import corpus_texts
    from scale_vlm.tiny.tokenizer import build_tokenizer

    return build_tokenizer(corpus_texts(), vocab_size=1024)


def test_deterministic_by_seed():
    a = make_benchmark(BenchConfig(seed=3, num_examples=24))
    b = make_benchmark(BenchConfig(seed=3, num_examples=24))
    c = make_benchmark(BenchConfig(seed=4, num_examples=24))
    for col in ("prompt", "response", "answer", "choices", "scene"):
        assert a[col] == b[col]
    assert [im.tobytes() for im in a["image"]] == [im.tobytes() for im in b["image"]]
    assert a["response"] != c["response"]
    test = make_benchmark(BenchConfig(seed=3, num_examples=24, split="test"))
    assert not set(a["response"]) & set(test["response"])


def test_column_schema():
    ds = make_benchmark(BenchConfig(num_examples=40))
    assert COLUMNS <= set(ds.column_names)
    for ex in ds:
        assert ex["image"].size == (48, 48) and ex["image"].mode == "RGB"
        assert ex["prompt"].endswith("</answer>.") and "Think step by step" in ex["prompt"]
        assert ex["response"].startswith("<think>") and ex["response"].endswith(f"<answer>{ex['answer']}</answer>")
        assert ex["category"] in ("count", "attribute", "spatial", "compare")
        if ex["choices"]:
            assert ex["answer"] in OPTION_LETTERS[: len(ex["choices"])]
            assert "Options: (A) " in ex["prompt"]
            assert ex["choices"][OPTION_LETTERS.index(ex["answer"])] == ex["value"]
        else:
            assert ex["answer"] == ex["value"]
    train = to_training_format(ds)
    assert train.column_names == ["messages", "images"]
    assert train[0]["messages"][0]["content"][0]["type"] == "image" and len(train[0]["images"]) == 1
    dd = build_benchmark(num_train=8, num_test=4)
    assert len(dd["train"]) == 8 and len(dd["test"]) == 4


def test_answers_balanced():
    rows = items(2000)
    letters = Counter(r["answer"] for r in rows if r["choices"])
    top = letters.most_common(1)[0][1] / sum(letters.values())
    assert top <= 0.35, letters
    for cat in ("count", "attribute", "spatial", "compare"):
        c = Counter(r["answer"] for r in rows if r["category"] == cat and r["choices"])
        assert c.most_common(1)[0][1] / sum(c.values()) <= 0.40, (cat, c)
    numbers = Counter(r["answer"] for r in rows if not r["choices"] and r["category"] == "count")
    assert numbers.most_common(1)[0][1] / sum(numbers.values()) <= 0.40
    assert max(Counter(r["answer"] for r in rows).values()) / len(rows) <= 0.35
    assert 0.75 <= sum(bool(r["choices"]) for r in rows) / len(rows) <= 0.85


def test_gold_answers_match_scenes():
    for r in items(600):
        scene = json.loads(r["scene"])
        q = r["prompt"]
        if r["category"] == "count":
            noun = q.split("How many ")[1].split(" are")[0]
            if noun.endswith(" objects"):
                n = sum(o["colour"] == noun.split()[0] for o in scene)
            else:
                n = sum(o["shape"] == noun[:-1] for o in scene)
            assert str(n) == r["value"]
        elif r["category"] == "attribute":
            if q.startswith("What colour is the "):
                shape = q.split("What colour is the ")[1].split("?")[0]
                assert [o["colour"] for o in scene if o["shape"] == shape] == [r["value"]]
            else:
                colour = q.split("What shape is the ")[1].split(" object?")[0]
                assert [o["shape"] for o in scene if o["colour"] == colour] == [r["value"]]


def _ratio(tok, response):
    k = response.index("</think>") + len("</think>")
    think = len(tok(response[:k])["input_ids"])
    answer = len(tok(response[k:] + "<|im_end|>")["input_ids"])
    return think / answer


def test_think_answer_token_ratio(tokenizer):
    means = {}
    for v in (0, 1, 2):
        means[v] = statistics.mean(_ratio(tokenizer, r["response"]) for r in items(300, trace_verbosity=v))
    assert 10 <= means[1] <= 30, means  # the default
    assert means[0] < means[1] < means[2], means


def test_teacher_errors_only_in_traces():
    clean = items(400, teacher_error_rate=0.0)
    noisy = items(400, teacher_error_rate=1.0)
    assert not any(r["teacher_error"] for r in clean)
    # a trace stays clean only when every object in the scene bears on the answer (small scenes): 85% at 4 objects
    assert sum(r["teacher_error"] for r in noisy) / len(noisy) > 0.8
    tags = DEFAULT_TAGS
    for a, b in zip(clean, noisy):
        for key in ("prompt", "answer", "choices", "category", "value", "scene"):
            assert a[key] == b[key]
        ans_a = a["response"].split(tags.think_close, 1)[1]
        ans_b = b["response"].split(tags.think_close, 1)[1]
        assert ans_a == ans_b
        assert (a["response"] != b["response"]) == b["teacher_error"]
        assert b["response"].split(tags.think_close)[0].endswith(f"So the answer is {b['value']}.")
    default = items(1000)
    assert 0.15 <= sum(r["teacher_error"] for r in default) / 1000 <= 0.25


def test_answer_is_not_a_copy_of_the_trace():
    rows = items(500)
    copies = sum(r["response"].split("</think>")[0].rstrip(".").endswith(r["answer"]) for r in rows)
    assert copies / len(rows) < 0.3


def test_writers(tmp_path):
    from scale_vlm.data.formats import normalize_example

    ds = make_benchmark(BenchConfig(num_examples=6))
    p = write_messages_jsonl(ds, tmp_path / "msgs")
    lines = [json.loads(line) for line in p.read_text().splitlines()]
    assert len(lines) == 6
    for line, ex in zip(lines, ds):
        assert line["messages"][0]["content"][0]["type"] == "image"
        assert line["messages"][1]["content"][0]["text"] == ex["response"]
        assert (p.parent / line["images"][0]).is_file()
        chat = normalize_example(line, image_root=str(p.parent))
        assert chat.response == ex["response"] and len(chat.images) == 1
    q = write_sharegpt_json(ds, tmp_path / "sharegpt")
    records = json.loads(q.read_text())
    assert len(records) == 6
    for rec, ex in zip(records, ds):
        assert [t["from"] for t in rec["conversations"]] == ["human", "gpt"]
        assert rec["conversations"][0]["value"] == "<image>\n" + ex["prompt"]
        assert (q.parent / rec["image"]).is_file()
        chat = normalize_example(rec, image_root=str(q.parent))
        assert chat.response == ex["response"] and len(chat.images) == 1


def test_knobs_validated():
    with pytest.raises(ValueError):
        list(iter_items(BenchConfig(task_mix="count:1,nope:1")))
    with pytest.raises(ValueError):
        list(iter_items(BenchConfig(teacher_error_rate=1.5)))
    only = items(50, task_mix="spatial:1")
    assert {r["category"] for r in only} == {"spatial"}
    assert all(r["choices"] == [] for r in items(50, option_letter_fraction=0.0))


def _walk_line(response: str, header: str) -> str:
    think = response.split("</think>")[0]
    return think.split(header, 1)[1].split(".", 1)[0]


def test_walkthrough_marks_follow_the_scene():
    """Each walk-through mark is what the scene says: counts run 1..N over the matching objects only, the
    attribute search stops at the one object with the key, and spatial marks the two objects of the question."""
    from scale_vlm.bench.scenes import GRID, cell_name

    rows = items(400, teacher_error_rate=0.0, trace_style="walkthrough")
    seen = Counter()
    for r in rows:
        scene = json.loads(r["scene"])
        names = [f"{cell_name(o['cell'])} {o['colour']} {o['shape']}" for o in scene]
        q = r["prompt"]
        if r["category"] == "count":
            noun = q.split("How many ")[1].split(" are")[0]
            match = [o["colour"] == noun.split()[0] if noun.endswith(" objects") else o["shape"] == noun[:-1]
                     for o in scene]
            steps = _walk_line(r["response"], f"{noun}: ").split("; ")
            n, expected = 0, []
            for name, m in zip(names, match):
                n += m
                expected.append(f"{name}, count {n}" if m else name)
            assert steps == expected, (steps, expected)
            assert f"That makes {n}." in r["response"] and str(n) == r["value"]
        elif r["category"] == "attribute":
            header = q.split("What colour is the ")[1].split("?")[0] if "colour" in q else q.split(
                "What shape is the ")[1].split("?")[0]
            steps = _walk_line(r["response"], f"The only {header}: ").split("; ")
            assert steps[-1].endswith(", found") and len(steps) == 1 + next(
                i for i, o in enumerate(scene) if (o["shape"] if "colour" in q else o["colour"]) == header.split()[0])
        elif r["category"] == "spatial":
            assert r["response"].count(", found at row ") == 2
            for o in scene:
                desc = (f"{cell_name(o['cell'])} {o['colour']} {o['shape']}, found at row {o['cell'] // GRID + 1} "
                        f"column {o['cell'] % GRID + 1}")
                assert (desc in r["response"]) == (f"the {o['colour']} {o['shape']}" in q)
        seen[r["category"]] += 1
    assert min(seen.values()) > 50


def test_walkthrough_copies_the_scanned_scene():
    """With a teacher error the walk-through repeats the scan's wrong detail (the trace stays self-consistent) and
    the marks, the value and the answer are unchanged."""
    walk = dict(trace_style="walkthrough")
    clean, noisy = items(300, teacher_error_rate=0.0, **walk), items(300, teacher_error_rate=1.0, **walk)
    for a, b in zip(clean, noisy):
        if not b["teacher_error"]:
            continue
        scan = b["response"].split("I scan the grid row by row: ", 1)[1].split(".", 1)[0]
        walk = b["response"].split(scan, 1)[1]
        for item in scan.split(", "):
            assert item in walk  # every scanned object, as scanned
        marks = re.findall(r", (count \d+|found)", a["response"])
        assert marks == re.findall(r", (count \d+|found)", b["response"])
        assert a["response"].split("</think>")[1] == b["response"].split("</think>")[1]


def test_lookup_style_is_the_default_and_names_cells_at_once():
    rows = items(200, teacher_error_rate=0.0)  # the default style
    assert not any(", count " in r["response"] or ", found" in r["response"] for r in rows)
    counts = [r for r in rows if r["category"] == "count"]
    assert all(f"That makes {r['value']}." in r["response"] for r in counts)
    with pytest.raises(ValueError, match="trace_style"):
        items(5, trace_style="nope")


def test_object_first_scan_names_each_cell_after_its_object():
    """``scan_order="object_first"`` rewrites only the scan and the re-check (``red circle at top left``); every other
    word of the trace, the scene and the answer are those of the default order, and both scans parse back to the
    true scene."""
    from scale_vlm.bench.scenes import cell_name, parse_caption

    cell_first, object_first = items(200, teacher_error_rate=0.0), items(200, teacher_error_rate=0.0, scan_order="object_first")
    for a, b in zip(cell_first, object_first):
        scene = json.loads(b["scene"])
        assert a["scene"] == b["scene"] and a["answer"] == b["answer"] and a["prompt"] == b["prompt"]
        scan_a = ", ".join(f"{cell_name(o['cell'])} {o['colour']} {o['shape']}" for o in scene) + "."
        scan_b = ", ".join(f"{o['colour']} {o['shape']} at {cell_name(o['cell'])}" for o in scene) + "."
        assert a["response"].count(scan_a) == b["response"].count(scan_b) == 2  # the scan and the re-check
        assert a["response"].replace(scan_a, "SCAN") == b["response"].replace(scan_b, "SCAN")
        truth = {o["cell"]: (o["colour"], o["shape"]) for o in scene}
        assert parse_caption(scan_a) == parse_caption(scan_b) == truth
    assert items(3)[0]["response"] == items(3, scan_order="cell_first")[0]["response"]  # the default
    with pytest.raises(ValueError, match="scan_order"):
        items(5, scan_order="nope")


def test_corpus_rebuilds_the_shipped_tokenizer(tokenizer):
    # the tokenizer corpus pins its own benchmark settings, so changing a benchmark default cannot drift the
    # vocabulary away from the shipped base's
    from transformers import AutoTokenizer

    from scale_vlm.tiny.shipped import SHIPPED_BASE

    shipped = AutoTokenizer.from_pretrained(SHIPPED_BASE)
    assert tokenizer.get_vocab() == shipped.get_vocab()
