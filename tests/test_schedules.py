import math

import pytest

from scale_vlm.schedules import SCHEDULES, WeightSchedule, schedule_weights, training_progress


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cosine", {0.0: (0.8, 0.2), 0.5: (0.5, 0.5), 1.0: (0.2, 0.8)}),
        ("linear", {0.0: (0.8, 0.2), 0.5: (0.5, 0.5), 1.0: (0.2, 0.8)}),
        ("constant", {0.0: (0.8, 0.2), 0.5: (0.8, 0.2), 1.0: (0.8, 0.2)}),
        ("step", {0.0: (0.8, 0.2), 0.49: (0.8, 0.2), 0.5: (0.2, 0.8), 1.0: (0.2, 0.8)}),
    ],
)
def test_schedule_values(name, expected):
    for p, (w_t, w_a) in expected.items():
        got = schedule_weights(name, p)
        assert got == pytest.approx((w_t, w_a)), (name, p)


def test_cosine_is_think_heavy_early_and_differs_from_linear():
    w_t, w_a = schedule_weights("cosine", 0.25)
    assert w_t == pytest.approx(0.8 - 0.6 * 0.5 * (1 - math.cos(math.pi / 4)))
    assert w_t > schedule_weights("linear", 0.25)[0]


def test_custom_weights_and_clamping():
    s = WeightSchedule("linear", think_start=1.0, think_end=0.0, answer_start=0.0, answer_end=2.0)
    assert s(0.5) == pytest.approx((0.5, 1.0))
    assert s(-1) == s(0.0) and s(7) == s(1.0)


def test_registry_and_errors():
    assert set(SCHEDULES) == {"cosine", "linear", "constant", "step"}
    with pytest.raises(ValueError, match="unknown schedule"):
        WeightSchedule("exp")
    with pytest.raises(ValueError, match="finite"):
        WeightSchedule(think_start=float("nan"))


def test_training_progress_spans_first_to_last_step():
    assert training_progress(0, 10) == 0.0
    assert training_progress(9, 10) == 1.0
    assert training_progress(3, 7) == pytest.approx(0.5)
    assert training_progress(0, 1) == 0.0


def test_plot_schedule_writes_png(tmp_path):
    from scale_vlm.schedules import plot_schedule

    path = plot_schedule(WeightSchedule(), str(tmp_path / "s.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
