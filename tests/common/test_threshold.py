"""The decision threshold chosen on validation counts, against sklearn on the raw scores."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from common.tasks.threshold import (
    THRESHOLDS,
    choose_threshold,
    decode_counts,
    encode_counts,
    metrics_at_threshold,
    score_counts,
)


def _scores(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(np.int64)
    # a weak, skewed model: every score below 0.5, positives a little higher
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(-2.0, 0.7, n) + 0.8 * labels)))
    return labels, scores


def test_the_chosen_threshold_maximises_balanced_accuracy_over_the_grid() -> None:
    labels, scores = _scores(0)
    chosen = choose_threshold(score_counts(labels, scores))
    by_sklearn = [balanced_accuracy_score(labels, scores >= t) for t in THRESHOLDS]
    assert chosen == pytest.approx(THRESHOLDS[int(np.argmax(by_sklearn))])
    assert chosen is not None and chosen < 0.5  # argmax would call every image negative
    assert balanced_accuracy_score(labels, scores >= chosen) > 0.6
    assert balanced_accuracy_score(labels, scores >= 0.5) < 0.55


def test_sites_counts_add_up_to_the_pooled_counts() -> None:
    labels, scores = _scores(1)
    parts = [score_counts(labels[s], scores[s]) for s in (slice(0, 150), slice(150, None))]
    assert np.array_equal(parts[0] + parts[1], score_counts(labels, scores))


def test_metrics_at_the_threshold_match_sklearn() -> None:
    labels, scores = _scores(2)
    probabilities = np.stack([1 - scores, scores], axis=1)
    threshold = float(THRESHOLDS[40])
    metrics = metrics_at_threshold(labels, probabilities, threshold)
    decided = scores >= threshold
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, decided))
    assert metrics["f1"] == pytest.approx(f1_score(labels, decided))
    assert metrics["precision"] == pytest.approx(precision_score(labels, decided))
    assert metrics["recall"] == pytest.approx(recall_score(labels, decided))
    assert metrics["threshold"] == threshold


def test_one_class_gives_no_threshold() -> None:
    assert choose_threshold(score_counts(np.zeros(5, dtype=np.int64), np.full(5, 0.3))) is None


def test_counts_survive_encoding() -> None:
    counts = score_counts(*_scores(3))
    assert np.array_equal(decode_counts(encode_counts(counts)), counts)


_ROW = " ".join(["1"] * (len(THRESHOLDS) + 1))


def _row(cell: str) -> str:
    return " ".join([cell] * (len(THRESHOLDS) + 1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 2 3;4 5 6",
        ";".join([_ROW] * 3),
        f"{_ROW};{_row('-1')}",
        f"{_ROW};{_row('9' * 40)}",
        f"{_ROW};{_row('1.5')}",
    ],
)
def test_hostile_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="score counts"):
        decode_counts(text)
