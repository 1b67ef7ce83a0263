import math

import numpy as np
import pytest

from common.tasks.metrics import classification_metrics, confusion_matrix


def test_binary_metrics_match_hand_computed_values() -> None:
    # labels:      1    1    1    0    0    0    0    1
    # p(class 1): .9   .8   .3   .2   .6   .1   .4   .7   -> predictions 1 1 0 0 1 0 0 1
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p1 = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7])
    metrics = classification_metrics(y, np.stack([1 - p1, p1], axis=1))
    # TP=3 (0.9, 0.8, 0.7), FN=1 (0.3), FP=1 (0.6), TN=3
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 3 / 4) / 2)
    # AUC: of the 16 (positive, negative) pairs, the positive scores higher in all but
    # (0.3 vs 0.4) and (0.3 vs 0.6): 14/16.
    assert metrics["roc_auc"] == pytest.approx(14 / 16)


def test_balanced_accuracy_differs_from_accuracy_on_imbalanced_data() -> None:
    y = np.array([0] * 9 + [1])
    probabilities = np.tile([0.9, 0.1], (10, 1))  # always predicts class 0
    metrics = classification_metrics(y, probabilities)
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    assert metrics["recall"] == 0.0
    assert metrics["precision"] == 0.0  # no positive predictions: defined as 0, not NaN
    assert metrics["f1"] == 0.0


def test_multiclass_metrics_are_macro_averaged() -> None:
    y = np.array([0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 2, 2, 1]] * 0.8 + 0.2 / 3
    metrics = classification_metrics(y, probabilities)
    # per-class recall: 1, 0, 1/2 ; precision: 1, 0, 1/2
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert metrics["precision"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert metrics["recall"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_roc_auc_is_nan_when_only_one_class_is_present() -> None:
    metrics = classification_metrics(np.zeros(4, dtype=int), np.tile([0.7, 0.3], (4, 1)))
    assert math.isnan(metrics["roc_auc"])
    assert metrics["accuracy"] == 1.0


def test_confusion_matrix_counts() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 2)
    assert matrix.tolist() == [[1, 1], [1, 2]]


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not match"):
        classification_metrics(np.zeros(3, dtype=int), np.zeros((2, 2)))
