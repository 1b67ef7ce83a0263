"""Classification task: cross-entropy loss, class probabilities and their metrics."""

import numpy as np
import torch
from torch import nn

from common.data.arrays import ImageArrays
from common.tasks.metrics import classification_metrics
from common.tasks.threshold import choose_threshold, metrics_at_threshold, score_counts
from common.tasks.training import make_loader

__all__ = [
    "WeightedCrossEntropy",
    "criterion",
    "evaluate",
    "evaluate_at_validation_threshold",
    "predict_probabilities",
    "targets",
    "threshold_on",
]


def targets(data: ImageArrays) -> np.ndarray:
    """What the network learns to output: one class per image."""
    return data.labels


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with a weight per class, a plain mean over the samples of the batch.

    Unlike ``nn.CrossEntropyLoss(weight=...)``, which divides by the batch's summed weights
    (a quantity that depends on every sample's label), this is the mean of per-sample losses
    ``w[y_i] * CE_i``: what DP-SGD needs, each sample's gradient its own.
    """

    def __init__(self, class_weights: tuple[float, ...]) -> None:
        """Weights in class order."""
        super().__init__()
        self.weights: torch.Tensor
        self.register_buffer("weights", torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of each sample's weighted cross-entropy."""
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        return (losses * self.weights[labels]).mean()


def criterion(class_weights: tuple[float, ...] = ()) -> nn.Module:
    """Cross-entropy, a mean over the samples of the batch, optionally weighted per class."""
    return WeightedCrossEntropy(class_weights) if class_weights else nn.CrossEntropyLoss()


@torch.no_grad()
def predict_probabilities(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> np.ndarray:
    """Softmax class probabilities [N, K]."""
    model.eval()
    loader = make_loader(data.images, data.labels, batch_size, shuffle=False)
    outputs = [torch.softmax(model(images), dim=1) for images, _ in loader]
    return torch.cat(outputs).numpy()


def evaluate(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> dict[str, float]:
    """Cross-entropy loss and every classification metric on ``data``."""
    return _scored(data.labels, predict_probabilities(model, data, batch_size))


def _scored(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Cross-entropy loss and every classification metric of ``probabilities``."""
    clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "loss": float(-np.log(clipped).mean()),
        **classification_metrics(labels, probabilities),
    }


def threshold_on(model: nn.Module, data: ImageArrays) -> float | None:
    """The grid threshold of highest balanced accuracy on ``model``'s scores of ``data``.

    None for a model of more than two outputs or data without both classes.
    """
    probabilities = predict_probabilities(model, data)
    if probabilities.shape[1] != 2:
        return None
    return choose_threshold(score_counts(data.labels, probabilities[:, 1]))


def evaluate_at_validation_threshold(
    model: nn.Module, val: ImageArrays, test: ImageArrays
) -> dict[str, float]:
    """:func:`evaluate` on ``test``, binary metrics at the threshold chosen on ``val``.

    The threshold is the one of highest balanced accuracy on ``val``'s score counts, as the
    federation chooses it from its sites' counts (or on the job's threshold data, which a
    caller then passes as ``val``); metrics stay at argmax when ``val`` lacks a class or the
    task has more than two.
    """
    probabilities = predict_probabilities(model, test)  # once: scored, then thresholded
    results = _scored(test.labels, probabilities)
    threshold = threshold_on(model, val) if len(val) else None
    if threshold is None:
        return results
    return {**results, **metrics_at_threshold(test.labels, probabilities, threshold)}
