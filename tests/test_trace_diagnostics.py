"""scale_vlm.bench.diagnostics (scripts/trace_diagnostics.py): each step check is exact on the teacher's own traces
and catches a corrupted step."""

import pytest

from scale_vlm.bench import diagnostics
from scale_vlm.bench.dataset import BenchConfig, make_benchmark


@pytest.fixture(scope="module")
def diag():
    return diagnostics


@pytest.fixture(scope="module")
def test_split():
    return make_benchmark(BenchConfig(seed=0, num_examples=24, split="test", teacher_error_rate=0.0))


def as_predictions(test, edit=lambda ex, text: text):
    return [{"id": ex["id"], "output": edit(ex, ex["response"]), "parsed_answer": ex["answer"], "correct": True}
            for ex in test]


def test_teacher_traces_pass_every_check(diag, test_split):
    out = diag.diagnose(as_predictions(test_split), test_split)
    assert out["predictions"] == 24
    for key in ("question_restated", "scan_scene_exact", "scan_object_exact", "first_step_correct", "value_correct",
                "letter_consistent_with_trace"):
        assert out[key] == 1.0, key


def test_corrupted_first_step_and_question_are_counted(diag, test_split):
    first = test_split[0]
    step = diag.step_after_scan(first["response"])
    restate = diag.first_sentence(first["response"])
    assert step and restate and not restate.startswith(diag.SCAN_INTRO)

    def corrupt(ex, text):
        if ex["id"] != first["id"]:
            return text
        return text.replace(step, "Nothing here.", 1).replace(restate, "I need something else.", 1)

    out = diag.diagnose(as_predictions(test_split, corrupt), test_split)
    assert out["first_step_correct"] == round(23 / 24, 3)
    assert out["question_restated"] == round(23 / 24, 3)
    assert out["scan_scene_exact"] == 1.0  # the scan itself is untouched
    assert diag.step_after_scan("<think>no scan at all.</think>") is None


def test_prediction_outside_the_split_is_refused(diag, test_split):
    with pytest.raises(ValueError, match="not in the regenerated test split"):
        diag.diagnose([{"id": "other-0", "output": "", "parsed_answer": "", "correct": False}], test_split)
