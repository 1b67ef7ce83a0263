"""Classification task: cross-entropy training epochs, prediction and evaluation."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, TensorDataset

from common.data.arrays import ImageArrays
from common.tasks.metrics import classification_metrics

__all__ = ["EpochStats", "evaluate", "make_loader", "predict_probabilities", "train_epochs"]


@dataclass(frozen=True)
class EpochStats:
    """Mean training loss over the samples seen, and how many steps and samples that was."""

    loss: float
    steps: int
    samples: int


def make_loader(
    data: ImageArrays, batch_size: int, shuffle: bool, seed: int | None = None
) -> DataLoader:
    """A DataLoader over in-memory arrays (no decoding: images are already preprocessed)."""
    dataset = TensorDataset(torch.from_numpy(data.images), torch.from_numpy(data.labels))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: Optimizer,
    epochs: int,
    proximal_mu: float = 0.0,
) -> EpochStats:
    """Train for ``epochs`` epochs with cross-entropy.

    With ``proximal_mu > 0`` each step is followed by a FedProx proximal step towards the weights
    the round started from (Li et al., "Federated Optimization in Heterogeneous Networks",
    MLSys 2020, arXiv:1812.06127). It is applied as a separate, decoupled step,
    w <- w - lr * mu * (w - w_global), so that DP-SGD clips and noises only the data term, and
    the proximal term, which depends on no patient data, leaves the privacy guarantee unchanged.
    """
    criterion = nn.CrossEntropyLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    total_loss, steps, samples = 0.0, 0, 0
    for _ in range(epochs):
        for images, labels in loader:
            if labels.numel() == 0:  # Poisson sampling may draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            if anchor:
                _proximal_step(model, anchor, optimizer, proximal_mu)
            total_loss += float(loss.detach()) * labels.numel()
            steps += 1
            samples += labels.numel()
    return EpochStats(loss=total_loss / max(samples, 1), steps=steps, samples=samples)


def _proximal_step(
    model: nn.Module, anchor: list[torch.Tensor], optimizer: Optimizer, mu: float
) -> None:
    learning_rate = float(optimizer.param_groups[0]["lr"])
    with torch.no_grad():
        for param, start in zip(model.parameters(), anchor, strict=True):
            param.sub_(learning_rate * mu * (param - start))


@torch.no_grad()
def predict_probabilities(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> np.ndarray:
    """Softmax class probabilities [N, K]."""
    model.eval()
    outputs = [
        torch.softmax(model(images), dim=1)
        for images, _ in make_loader(data, batch_size, shuffle=False)
    ]
    return torch.cat(outputs).numpy()


def evaluate(model: nn.Module, data: ImageArrays, batch_size: int = 256) -> dict[str, float]:
    """Cross-entropy loss and every classification metric on ``data``."""
    probabilities = predict_probabilities(model, data, batch_size)
    clipped = np.clip(probabilities[np.arange(len(data)), data.labels], 1e-12, 1.0)
    return {
        "loss": float(-np.log(clipped).mean()),
        **classification_metrics(data.labels, probabilities),
    }
