"""Where generated reasoning goes wrong: each step of a trace on the built-in benchmark checked against the
held-out scene and question (``scripts/trace_diagnostics.py`` runs it on prediction files).

Per prediction it checks, against the held-out scene and question:
- question: the trace's first sentence restates the question as the teacher's trace does (verbosity >= 1; a
  wrong object here means the question was misread);
- scan: the objects named after "I scan the grid row by row:" (all right: scene_exact; per object: object_exact);
- first step: the sentence right after the scan equals the teacher's (the cells holding the asked attribute for
  count and compare, the asked object's cell for spatial and attribute): the first task step over the scan;
- value: the trace's conclusion "So the answer is X." equals the true value;
- with ``paraphrased=True`` (data made with ``trace_entropy > 0``, whose sentences come in several phrasings) the
  restated question and the first step are compared by their content words (``prose.content_key``: cells,
  colours, shapes, numbers, relations), and the scan may open with any of ``prose.SCAN_INTROS``;
- letter: for option-letter questions whose concluded value is one of the options, the answer letter is the letter
  of that option (consistency of the answer with the model's own trace; chance is about 1 / number of options).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from ..prompts import OPTION_LETTERS
from .prose import SCAN_INTROS, content_key
from .scenes import parse_caption
from .tasks import CONCLUSION, SCAN_INTRO  # noqa: F401 (read as diagnostics.SCAN_INTRO by tests and scripts)

# any phrasing of the scan intro (trace_entropy > 0); the first is the templated one, tasks.SCAN_INTRO
SCAN = re.compile("(?:" + "|".join(map(re.escape, SCAN_INTROS)) + r") (.*?\.)")
VALUE = re.compile(re.escape(CONCLUSION) + r" (.*?)\.\s*</think>")
SENTENCE = re.compile(r"\s*(.*?\.)(?=\s|<|$)")
STEP_KEYS = ("n", "correct", "restated_checked", "restated_ok", "first_step_ok", "value_ok", "letter_checked",
             "letter_consistent")


def first_sentence(text: str) -> str | None:
    """The first sentence inside ``<think>``, or None without a think segment."""
    think = text.split("<think>", 1)
    m = SENTENCE.match(think[1]) if len(think) == 2 else None
    return m.group(1) if m else None


def step_after_scan(text: str) -> str | None:
    """The sentence right after the scan sentence, or None when the trace has no scan."""
    scan = SCAN.search(text)
    m = SENTENCE.match(text, scan.end()) if scan else None
    return m.group(1) if m else None


def diagnose(predictions: list[dict], test, paraphrased: bool = False) -> dict:
    """The step checks of ``predictions`` (rows of ``predictions.jsonl``) against ``test``, the regenerated
    held-out split of the run that wrote them: overall rates and counts per task family. ``paraphrased``: the
    split was made with ``trace_entropy > 0``, so sentences are compared by content, not wording."""
    same = (lambda a, b: content_key(a) == content_key(b)) if paraphrased else (lambda a, b: a == b)
    by_id = {ex["id"]: ex for ex in test}
    scenes = objects = objects_ok = 0
    cat = defaultdict(lambda: dict.fromkeys(STEP_KEYS, 0))
    for p in predictions:
        ex = by_id.get(p["id"])
        if ex is None:
            raise ValueError(f"prediction {p['id']!r} is not in the regenerated test split: pass the benchmark "
                             "options (--seed, --num_test, knobs) of the run that wrote it")
        truth = {o["cell"]: (o["colour"], o["shape"]) for o in json.loads(ex["scene"])}
        scan = SCAN.search(p["output"])
        seen = parse_caption(scan.group(1)) if scan else {}  # either scan order
        scenes += seen == truth
        objects += len(truth)
        objects_ok += sum(seen.get(c) == v for c, v in truth.items())
        value = VALUE.search(p["output"])
        c = cat[ex["category"]]
        c["n"] += 1
        c["correct"] += bool(p["correct"])
        restate = first_sentence(ex["response"])
        if restate and not restate.startswith(SCAN_INTROS):  # verbosity 0 traces open with the scan
            c["restated_checked"] += 1
            c["restated_ok"] += same(first_sentence(p["output"]), restate)
        c["first_step_ok"] += same(step_after_scan(p["output"]), step_after_scan(ex["response"]))
        c["value_ok"] += bool(value) and value.group(1) == ex["value"]
        if ex["choices"] and value and value.group(1) in ex["choices"]:
            c["letter_checked"] += 1
            c["letter_consistent"] += p["parsed_answer"] == OPTION_LETTERS[list(ex["choices"]).index(value.group(1))]
    n = len(predictions)
    total = {k: sum(c[k] for c in cat.values()) for k in STEP_KEYS}
    return {
        "predictions": n,
        "question_restated": round(total["restated_ok"] / total["restated_checked"], 3) if total["restated_checked"] else None,
        "scan_scene_exact": round(scenes / n, 3), "scan_object_exact": round(objects_ok / objects, 3),
        "first_step_correct": round(total["first_step_ok"] / n, 3),
        "value_correct": round(total["value_ok"] / n, 3),
        "letter_consistent_with_trace": round(total["letter_consistent"] / max(1, total["letter_checked"]), 3),
        "by_category": {k: dict(v) for k, v in sorted(cat.items())},
    }
