"""Known-answer tests for every metric (methods.md section 4), computed by hand."""

import math

import pytest

from superpos.metrics import METRICS, compute
from superpos.tasks import TASKS


def test_accuracy_counts_invalid_as_wrong():
    assert compute(["accuracy"], [0, 1, None, 1], [0, 1, 1, 0])["accuracy"] == 0.5


def test_binary_f1_of_positive_class():
    # TP = 1 (row 0), FP = 1 (row 2), FN = 1 (row 1, invalid is never positive): F1 = 2/(2+1+1)
    assert compute(["f1"], [1, None, 1, 0], [1, 1, 0, 0])["f1"] == pytest.approx(0.5)


def test_macro_f1_over_three_classes():
    # class 0: P 1, R 1/2 -> 2/3; class 1: P 1/2, R 1 -> 2/3; class 2: 0  => 4/9
    out = compute(["macro_f1", "accuracy"], [0, 1, 1, None], [0, 1, 2, 0])
    assert out["macro_f1"] == pytest.approx(4 / 9)
    assert out["score"] == pytest.approx((4 / 9 + 0.5) / 2)  # CB's Table 1 score: mean of the two


def test_matthews_correlation():
    # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    assert compute(["mcc"], [1, 0, 0, 0], [1, 1, 0, 0])["mcc"] == pytest.approx(2 / math.sqrt(12))


def test_pearson_and_spearman():
    out = compute(["pearson", "spearman"], [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert out["pearson"] == pytest.approx(3 / math.sqrt(2 * 14 / 3))  # sum dxdy / sqrt(sum dx^2 sum dy^2)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["score"] == pytest.approx((out["pearson"] + 1.0) / 2)


def test_invalid_regression_prediction_is_minus_one():
    # None -> -1.0: x = (-1, 2, 3), y = (1, 2, 4): r = (17/3) / sqrt(26/3 * 14/3) = 17 / sqrt(364); ranks unchanged
    out = compute(["pearson", "spearman"], [None, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert out["pearson"] == pytest.approx(17 / math.sqrt(364))
    assert out["spearman"] == pytest.approx(1.0)
    assert out["invalid_rate"] == pytest.approx(1 / 3)


def test_multirc_f1a_and_em_group_by_question():
    groups = ["0-0", "0-0", "0-1", "0-1", "1-2"]
    golds = [1, 0, 1, 1, 0]
    preds = [1, 0, 1, 0, 0]
    out = compute(["f1a", "em"], preds, golds, groups)
    assert out["f1a"] == pytest.approx(0.8)  # TP 2, FP 0, FN 1: 4 / 5
    assert out["em"] == pytest.approx(2 / 3)  # question 0-1 has one wrong answer
    assert out["score"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_em_groups_need_not_be_contiguous():
    # answers of one question interleaved with another's: still one question each
    out = compute(["em"], [1, 1, 0, 0], [1, 1, 0, 1], ["a", "b", "a", "b"])
    assert out["em"] == 0.5


def test_em_needs_groups():
    with pytest.raises(ValueError, match="group"):
        compute(["em"], [1], [1], None)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_all_invalid_predictions_score_zero(task):
    t = TASKS[task]
    golds = [0.4, 3.2, 5.0, 1.8] if t.regression else [0, 1, 1, 0]
    out = compute(t.metrics, [None] * 4, golds, ["q1", "q1", "q2", "q2"])
    assert {m: out[m] for m in t.metrics} == {m: 0.0 for m in t.metrics}
    assert out["score"] == 0.0 and out["invalid_rate"] == 1.0


def test_every_task_metric_exists():
    assert {m for t in TASKS.values() for m in t.metrics} <= set(METRICS)
