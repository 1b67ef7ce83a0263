"""Classification metrics: accuracy, balanced accuracy, precision, recall, F1 and ROC-AUC."""

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["CLASSIFICATION_METRICS", "classification_metrics", "confusion_matrix"]

#: Metric names every classification evaluation reports, in display order.
CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator,
        denominator,
        out=np.zeros_like(numerator, dtype=np.float64),
        where=denominator > 0,
    )


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Metrics of predicted class probabilities [N, K] against integer labels [N].

    Binary tasks (K == 2) report precision, recall and F1 of the positive class 1; tasks with
    more classes report their macro average. Balanced accuracy is the mean per-class recall.
    ROC-AUC uses MONAI (one-vs-rest, macro-averaged for K > 2) and is NaN when the labels hold a
    single class, where it is undefined.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"probabilities shape {probabilities.shape} does not match {y_true.shape[0]} labels"
        )
    num_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    precision = _safe_ratio(true_pos, matrix.sum(axis=0))
    recall = _safe_ratio(true_pos, matrix.sum(axis=1))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    present = matrix.sum(axis=1) > 0
    if num_classes == 2:
        chosen = {"precision": precision[1], "recall": recall[1], "f1": f1[1]}
    else:
        chosen = {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()}
    return {
        "accuracy": float(true_pos.sum() / max(len(y_true), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        **{name: float(value) for name, value in chosen.items()},
        "roc_auc": _roc_auc(y_true, probabilities),
    }


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    if len(np.unique(y_true)) < 2:
        return float("nan")
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        scores = torch.as_tensor(probabilities[:, 1])
        auc = compute_roc_auc(scores, torch.as_tensor(y_true))
    else:
        one_hot = np.eye(num_classes, dtype=np.int64)[y_true]
        auc = compute_roc_auc(
            torch.as_tensor(probabilities), torch.as_tensor(one_hot), average="macro"
        )
    return float(np.asarray(auc))  # MONAI types the result as any array-like
