"""Benchmark knobs trace_entropy / trace_repeat / trace_seed (bench/prose.py): level 0 is the templated data
byte for byte, higher levels change only the trace wording, every added observation is true, and the
think/answer ratio follows the length knobs."""

from __future__ import annotations

import hashlib
import json
import re
import statistics

import pytest

from scale_vlm.bench import BenchConfig, iter_items, make_benchmark
from scale_vlm.bench import diagnostics as diag
from scale_vlm.bench.prose import FILLERS, LEAD_INS, content_key, observations
from scale_vlm.bench.scenes import COLS, GRID, ROWS, Obj, Scene, cell_name, parse_caption

ITEM_KEYS = ("id", "prompt", "answer", "choices", "category", "value", "scene", "teacher_error")
CELL = rf"(?:{'|'.join(ROWS)}) (?:{'|'.join(COLS)})"


def items(n, **kw):
    return list(iter_items(BenchConfig(num_examples=n, **kw)))


def think(r):
    return r["response"].split("</think>")[0].removeprefix("<think>")


def scene_of(r) -> Scene:
    return Scene.of(Obj(o["cell"], o["colour"], o["shape"]) for o in json.loads(r["scene"]))


def test_level_zero_is_the_templated_data_byte_for_byte():
    # the digest of the data this repository wrote before the knobs existed (the same script run on the previous
    # commit's package): defaults, verbosity 0 and 2, walk-through, object-first scans
    h = hashlib.sha256()
    for kw in ({}, {"trace_verbosity": 0}, {"trace_verbosity": 2}, {"trace_style": "walkthrough"},
               {"scan_order": "object_first"}):
        for r in items(200, trace_entropy=0, trace_repeat=0, trace_seed=7, **kw):  # the wording seed draws nothing
            h.update(json.dumps([r["id"], r["prompt"], r["response"], r["scene"], r["teacher_error"]]).encode())
    assert h.hexdigest() == "76dc16a3257ff2aaeb24c89f80a06bce1d89e0e80639a66842d99d349b6c799f"


@pytest.mark.parametrize("level", [1, 2])
def test_entropy_changes_only_the_trace(level):
    base = make_benchmark(BenchConfig(num_examples=40))
    varied = make_benchmark(BenchConfig(num_examples=40, trace_entropy=level))
    for key in ITEM_KEYS:
        assert base[key] == varied[key], key
    assert [im.tobytes() for im in base["image"]] == [im.tobytes() for im in varied["image"]]
    answers = [r.split("</think>")[1] for r in base["response"]]
    assert answers == [r.split("</think>")[1] for r in varied["response"]]
    differ = sum(a != b for a, b in zip(base["response"], varied["response"]))
    assert differ >= 38, differ  # nearly every trace gets a new wording (P(all canonical) is small)


def test_distinct_traces_per_item_grow_with_the_level():
    n, seeds = 10, 12
    distinct, bits = {}, {}
    for level in (0, 1, 2):
        seen = [set() for _ in range(n)]
        for s in range(seeds):
            for i, r in enumerate(items(n, trace_entropy=level, trace_seed=s)):
                seen[i].add(r["response"])
        distinct[level] = statistics.mean(len(x) for x in seen)
        voices = []
        list(iter_items(BenchConfig(num_examples=50, trace_entropy=level), voices=voices))
        bits[level] = statistics.mean(v.bits for v in voices)
    assert distinct[0] == 1 and bits[0] == 0
    assert distinct[1] >= 10, distinct  # 12 seeds: almost every seed words the item differently
    assert distinct[2] == seeds, distinct
    assert 10 <= bits[1] < bits[2], bits


def _strip_extras(text: str, scene: Scene) -> str:
    """The trace without its inserted sentences (self-checks, hedges, fillers, lead-ins, observations of the true
    scene). Anything else left over, e.g. an observation that is false, breaks the sentence match below."""
    text = re.sub(r"Wait, let me re-check the \w+ (?:row|column): [^.]*\. Yes, that matches\. ", "", text)
    text = re.sub(r"Hmm, I should make sure [^.]*\. ", "", text)
    for s in sorted(set(observations(scene)) | set(FILLERS) | set(LEAD_INS), key=len, reverse=True):
        text = text.replace(s + " ", "")
    return text


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=\.) ", text)


@pytest.mark.parametrize("level", [1, 2])
def test_added_sentences_keep_every_step_and_the_conclusion(level):
    """Level 0 and level ``level`` traces of the same items, inserted sentences taken out: sentence for sentence the
    same content words (cells, colours, shapes, numbers, relations), and the same single conclusion."""
    base, varied = items(300), items(300, trace_entropy=level)
    inserted = 0
    for a, b in zip(base, varied):
        ta, tb = think(a), think(b)
        assert tb.endswith(f"So the answer is {b['value']}.") and tb.count("So the answer is") == 1
        stripped = _strip_extras(tb, scene_of(b))
        inserted += len(_sentences(tb)) - len(_sentences(stripped))
        assert [content_key(s) for s in _sentences(stripped)] == [content_key(s) for s in _sentences(ta)], (ta, tb)
    assert inserted >= (300 if level == 1 else 900), inserted


def test_observations_are_true_of_the_scene():
    """Every observation inserted at level 2, checked against the true scene, also in traces with a teacher error
    (the observations are about occupancy, which an error never changes)."""
    checked = 0
    for r in items(300, trace_entropy=2, teacher_error_rate=1.0):
        t, scene = think(r), scene_of(r)
        occupied = {o.cell for o in scene.objects}
        cell = {cell_name(c): c for c in range(GRID * GRID)}
        for m in re.finditer(rf"(?:The|the) ({CELL}) cell is empty\.", t):
            assert cell[m.group(1)] not in occupied, (m.group(0), r["scene"])
            checked += 1
        for m in re.finditer(rf"Next to the object at ({CELL}), the ({CELL}) cell", t):
            a, b = cell[m.group(1)], cell[m.group(2)]
            assert a in occupied and abs(a - b) in (1, GRID) and (abs(a - b) == GRID or a // GRID == b // GRID)
        for m in re.finditer(r"The (\w+) (row|column) is (empty|full)\.", t):
            idx = (ROWS if m.group(2) == "row" else COLS).index(m.group(1))
            line = {idx * GRID + k if m.group(2) == "row" else k * GRID + idx for k in range(GRID)}
            assert (not line & occupied) if m.group(3) == "empty" else line <= occupied
            checked += 1
        for m in re.finditer(r"(\d) of the nine cells are empty\.", t):
            assert int(m.group(1)) == GRID * GRID - len(occupied)
            checked += 1
        if "All the shapes are the same size." in t:
            assert len(occupied) > 1
    assert checked >= 100, checked
    # rendering facts follow the rendering knobs
    assert not any("same size" in r["response"] for r in items(200, trace_entropy=2, size_jitter=1))
    assert not any("middle of its cell" in r["response"] for r in items(200, trace_entropy=2, jitter=1))


def test_self_checks_reread_the_scan():
    """A self-check re-reads a row or column of the scene as the teacher scanned it: the true scene without a
    teacher error, the scan's wrong detail with one (the trace stays self-consistent)."""
    checks = 0
    for r in items(300, trace_entropy=2, teacher_error_rate=0.5):
        t = think(r)
        scan = parse_caption(diag.SCAN.search(t).group(1))
        truth = {o.cell: (o.colour, o.shape) for o in scene_of(r).objects}
        assert (scan != truth) == r["teacher_error"]
        for m in re.finditer(r"let me re-check the \w+ (?:row|column): ([^.]*)\.", t):
            for part in m.group(1).split(", "):
                name = " ".join(part.split()[:2])
                c = ROWS.index(name.split()[0]) * GRID + COLS.index(name.split()[1])
                assert part == f"{name} {' '.join(scan[c]) if c in scan else 'empty'}", (part, scan)
            checks += 1
    assert checks >= 100, checks


def test_diagnostics_read_paraphrased_traces():
    """Level-2 teacher traces pass every diagnostic against the level-2 split when compared by content, also when
    worded by another seed; compared word for word, the other wording fails the restated-question check."""
    split = make_benchmark(BenchConfig(num_examples=30, split="test", teacher_error_rate=0.0, trace_entropy=2))
    other = make_benchmark(BenchConfig(num_examples=30, split="test", teacher_error_rate=0.0, trace_entropy=2,
                                       trace_seed=1))
    preds = [{"id": ex["id"], "output": ex["response"], "parsed_answer": ex["answer"], "correct": True} for ex in other]
    out = diag.diagnose(preds, split, paraphrased=True)
    for key in ("question_restated", "scan_scene_exact", "scan_object_exact", "first_step_correct", "value_correct",
                "letter_consistent_with_trace"):
        assert out[key] == 1.0, (key, out[key])
    assert diag.diagnose(preds, split)["question_restated"] < 0.9
    # a wrong first step is still caught by content
    first = split[0]
    step = diag.step_after_scan(first["response"])
    wrong = [dict(preds[0], output=first["response"].replace(step, "Nothing here.", 1))] + preds[1:]
    assert diag.diagnose(wrong, split, paraphrased=True)["first_step_correct"] == round(29 / 30, 3)


def test_think_answer_ratio_grows_with_the_length_knobs():
    from transformers import AutoTokenizer

    from scale_vlm.tiny.shipped import SHIPPED_BASE

    tok = AutoTokenizer.from_pretrained(SHIPPED_BASE)

    def ratio(**kw):
        rs = []
        for r in items(60, **kw):
            k = r["response"].index("</think>") + len("</think>")
            rs.append(len(tok(r["response"][:k])["input_ids"]) / len(tok(r["response"][k:] + "<|im_end|>")["input_ids"]))
        return statistics.mean(rs)

    for level in (0, 2):
        means = [ratio(trace_verbosity=v, trace_repeat=rep, trace_entropy=level) for v, rep in ((0, 0), (1, 0), (2, 2))]
        assert means[0] < means[1] < means[2], (level, means)
        assert means[2] > 2 * means[0], (level, means)
    assert ratio(trace_repeat=1) > ratio() + 3  # one more pass: several think tokens per answer token more


def test_knobs_validated_and_exposed():
    from scale_vlm.knobs import BENCH_KNOBS, BenchKnobs

    with pytest.raises(ValueError, match="trace_entropy"):
        items(2, trace_entropy=3)
    with pytest.raises(ValueError, match="trace_repeat"):
        items(2, trace_repeat=-1)
    assert {"trace_entropy", "trace_repeat"} <= set(BENCH_KNOBS)
    knobs = BenchKnobs()
    assert (knobs.trace_entropy, knobs.trace_repeat) == (BenchConfig.trace_entropy, BenchConfig.trace_repeat) == (0, 0)
    cfg = BenchKnobs(trace_entropy=2, trace_repeat=1).bench(0, "train", 3)
    assert (cfg.trace_entropy, cfg.trace_repeat) == (2, 1)
