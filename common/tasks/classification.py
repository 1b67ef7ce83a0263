"""Classification task: cross-entropy loss, class probabilities and their metrics."""

import numpy as np
import torch
from torch import nn

from common.data.arrays import ImageArrays
from common.tasks.metrics import classification_metrics
from common.tasks.training import make_loader

__all__ = ["criterion", "evaluate", "predict_probabilities", "targets"]


def targets(data: ImageArrays) -> np.ndarray:
    """What the network learns to output: one class per image."""
    return data.labels


def criterion() -> nn.Module:
    """Cross-entropy, a mean over the samples of the batch."""
    return nn.CrossEntropyLoss()


@torch.no_grad()
def predict_probabilities(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> np.ndarray:
    """Softmax class probabilities [N, K]."""
    model.eval()
    loader = make_loader(data.images, data.labels, batch_size, shuffle=False)
    outputs = [torch.softmax(model(images), dim=1) for images, _ in loader]
    return torch.cat(outputs).numpy()


def evaluate(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> dict[str, float]:
    """Cross-entropy loss and every classification metric on ``data``."""
    probabilities = predict_probabilities(model, data, batch_size)
    clipped = np.clip(probabilities[np.arange(len(data)), data.labels], 1e-12, 1.0)
    return {
        "loss": float(-np.log(clipped).mean()),
        **classification_metrics(data.labels, probabilities),
    }
