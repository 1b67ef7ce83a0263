"""Pretraining a job's network on public data (not the hospitals'), without DP, for initial weights.

Public data needs no privacy protection, so the network trains with plain SGD/Adam; it is built
exactly as the job builds it (with DP's layer constraints when the job uses DP), so that the
weights load into the federation's global model (common.initial_weights).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.registry import task_for
from common.tasks.training import make_loader, train_epochs
from simulations.runner import fit_job_to_data

__all__ = ["Pretrained", "pretrain"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """Weights trained on public data, the job they fit, and what they scored there."""

    job: FederationJob
    state_dict: dict[str, torch.Tensor]
    #: Loss and metrics on the public data's validation split (test split if it has none).
    metrics: dict[str, float]
    #: Training images per class of the public data.
    class_counts: dict[str, int]
    epochs: int


def pretrain(job: FederationJob, data: Path, epochs: int) -> Pretrained:
    """Train ``job``'s network on ``data`` (its train split) for ``epochs`` epochs, no DP."""
    splits = load_dataset(data, image_size=job.image_size, seed=job.seed)
    job = fit_job_to_data(job, splits)
    task = task_for(job.task)
    torch.manual_seed(job.seed)
    size = job.spatial_shape
    model = build_model(job.model, job.in_channels, job.num_classes, size, job.privacy.enabled)
    optimizer: torch.optim.Optimizer
    if job.train.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=job.train.learning_rate)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=job.train.learning_rate, momentum=0.9)
    loader = make_loader(
        splits.train.images,
        task.targets(splits.train),
        job.train.batch_size,
        shuffle=True,
        seed=job.seed,
    )
    criterion = task.criterion(job)
    for epoch in range(1, epochs + 1):
        stats = train_epochs(model, loader, optimizer, 1, criterion)
        logger.info("pretraining epoch %d/%d: loss %.4f", epoch, epochs, stats.loss)
    held_out = splits.val if len(splits.val) else splits.test
    metrics = task.evaluate(model, held_out, job.output_names) if len(held_out) else {}
    counts = np.bincount(splits.train.labels, minlength=len(splits.class_names))
    return Pretrained(
        job=job,
        state_dict={key: value.detach().clone() for key, value in model.state_dict().items()},
        metrics=metrics,
        class_counts={name: int(n) for name, n in zip(splits.class_names, counts, strict=False)},
        epochs=epochs,
    )
