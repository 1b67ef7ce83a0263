"""A binary decision threshold chosen on validation data from per-class score counts.

A site reports how many of its validation images of each class fall in each score bin (a fixed
grid, the same everywhere); counts add up over sites, and the threshold is the grid point that
maximises balanced accuracy (Youden's J; Youden, Cancer 1950) on the summed counts. Metrics at a
grid threshold are exact from the counts: an image is called positive when its score is at
least the threshold.
"""

import numpy as np

from common.tasks.metrics import classification_metrics

__all__ = [
    "THRESHOLD",
    "THRESHOLDS",
    "choose_threshold",
    "decode_counts",
    "encode_counts",
    "metrics_at_threshold",
    "score_counts",
]

#: The metric key of the threshold the thresholded metrics were computed at.
THRESHOLD = "threshold"

#: Candidate thresholds: logistic of a uniform grid of log-odds in [-6, 6] (steps of 0.125),
#: fine near 0 and 1 where DP-trained models often put their scores. Bin k holds scores in
#: [THRESHOLDS[k-1], THRESHOLDS[k]), bin 0 those below the first, the last those above.
THRESHOLDS: np.ndarray = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, 97)))
_BINS = len(THRESHOLDS) + 1


def score_counts(labels: np.ndarray, positive_scores: np.ndarray) -> np.ndarray:
    """Counts [2, bins]: row 0 the negatives', row 1 the positives' scores per bin."""
    bins = np.searchsorted(THRESHOLDS, np.asarray(positive_scores, dtype=np.float64), "right")
    counts = np.zeros((2, _BINS), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=np.int64), bins), 1)
    return counts


def encode_counts(counts: np.ndarray) -> str:
    """Counts as one metric value (legacy Flower metrics are scalars): ``n0 n1 ...;p0 p1 ...``."""
    return ";".join(" ".join(str(int(c)) for c in row) for row in counts)


def decode_counts(text: str) -> np.ndarray:
    """Inverse of :func:`encode_counts`, for values from another party.

    Raises:
        ValueError: not two rows of ``bins`` non-negative whole numbers.
    """
    rows = text.split(";")
    if len(rows) != 2 or any(len(row.split()) != _BINS for row in rows):
        raise ValueError(f"score counts must be 2 rows of {_BINS} numbers")
    if not all(cell.isdigit() and len(cell) <= 12 for row in rows for cell in row.split()):
        raise ValueError("score counts must be whole numbers >= 0 below 10**12")
    return np.array([[int(c) for c in row.split()] for row in rows], dtype=np.int64)


def _rates(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold: (negatives called positive, positives called positive)."""
    at_or_above = counts[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]  # scores >= THRESHOLDS[k]
    return at_or_above[0], at_or_above[1]


def choose_threshold(counts: np.ndarray) -> float | None:
    """The grid threshold of highest balanced accuracy; None without both classes."""
    negatives, positives = counts.sum(axis=1)
    if negatives == 0 or positives == 0:
        return None
    false_pos, true_pos = _rates(counts)
    balanced = (true_pos / positives + 1.0 - false_pos / negatives) / 2.0
    return float(THRESHOLDS[int(np.argmax(balanced))])


def metrics_at_threshold(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """Every classification metric, calling positive the images scoring at least ``threshold``.

    ROC-AUC does not depend on the threshold; the others are computed as at argmax, on the
    decisions the threshold makes.
    """
    positive = np.asarray(probabilities, dtype=np.float64)[:, 1] >= threshold
    decided = np.stack([~positive, positive], axis=1).astype(np.float64)
    metrics = classification_metrics(labels, decided)
    metrics["roc_auc"] = classification_metrics(labels, probabilities)["roc_auc"]
    return {**metrics, THRESHOLD: float(threshold)}
