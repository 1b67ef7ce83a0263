"""The local training loop every task shares: batches of (images, targets), one criterion."""

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["EpochStats", "PrivateSteps", "make_loader", "train_epochs", "train_private_epochs"]


class PrivateSteps(Protocol):
    """A DP-SGD engine that samples its own batches (common.privacy's engines)."""

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch."""
        ...

    def step(
        self,
        model: nn.Module,
        criterion: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: Optimizer,
    ) -> tuple[float, int]:
        """One private step; returns (summed loss, samples used)."""
        ...


@dataclass(frozen=True)
class EpochStats:
    """Mean training loss over the samples seen, and how many steps and samples that was."""

    loss: float
    steps: int
    samples: int


def make_loader(
    images: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader over in-memory arrays (no decoding: images are already preprocessed)."""
    dataset = TensorDataset(torch.from_numpy(images), torch.from_numpy(targets))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: Optimizer,
    epochs: int,
    criterion: nn.Module,
    proximal_mu: float = 0.0,
) -> EpochStats:
    """Train for ``epochs`` epochs, minimising ``criterion(model(images), targets)``.

    Under DP-SGD the criterion must be a mean of per-sample losses (Opacus' ``loss_reduction
    ="mean"``): a loss that pools the samples of a batch (e.g. a batch-wide Dice) would let one
    patient's gradient depend on another's.

    With ``proximal_mu > 0`` each step is followed by a FedProx proximal step towards the weights
    the round started from (Li et al., "Federated Optimization in Heterogeneous Networks",
    MLSys 2020, arXiv:1812.06127). It is applied as a separate, decoupled step,
    w <- w - lr * mu * (w - w_global), so that DP-SGD clips and noises only the data term, and
    the proximal term, which depends on no patient data, leaves the privacy guarantee unchanged.
    """
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    total_loss, steps, samples = 0.0, 0, 0
    for _ in range(epochs):
        for images, targets in loader:
            if len(targets) == 0:  # Poisson sampling may draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), targets)
            loss.backward()
            optimizer.step()
            if anchor:
                _proximal_step(model, anchor, optimizer, proximal_mu)
            total_loss += float(loss.detach()) * len(targets)
            steps += 1
            samples += len(targets)
    return EpochStats(loss=total_loss / max(samples, 1), steps=steps, samples=samples)


def train_private_epochs(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    engine: PrivateSteps,
    optimizer: Optimizer,
    epochs: int,
    criterion: nn.Module,
    proximal_mu: float = 0.0,
) -> EpochStats:
    """DP-SGD for ``epochs`` epochs of ``engine.steps_per_epoch`` steps, per image or patient.

    Each step draws its own images or patients (Poisson), so an epoch visits each once only in
    expectation. ``criterion`` is a mean of per-image losses, as for :func:`train_epochs`;
    FedProx's proximal step follows each private step, as there.
    """
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    total_loss, steps, samples = 0.0, 0, 0
    for _ in range(epochs):
        for _ in range(engine.steps_per_epoch):
            loss, used = engine.step(model, criterion, images, targets, optimizer)
            if anchor:
                _proximal_step(model, anchor, optimizer, proximal_mu)
            total_loss += loss
            steps += 1
            samples += used
    return EpochStats(loss=total_loss / max(samples, 1), steps=steps, samples=samples)


def _proximal_step(
    model: nn.Module, anchor: list[torch.Tensor], optimizer: Optimizer, mu: float
) -> None:
    learning_rate = float(optimizer.param_groups[0]["lr"])
    with torch.no_grad():
        for param, start in zip(model.parameters(), anchor, strict=True):
            param.sub_(learning_rate * mu * (param - start))
