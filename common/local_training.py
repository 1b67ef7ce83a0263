"""One site's local update for one round: optional DP-SGD, FedProx, and its privacy bookkeeping."""

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from common.data.arrays import ImageArrays
from common.federation_job import FederationJob
from common.models import grad_sample_mode
from common.privacy import PrivacyState, SitePrivacyEngine
from common.tasks.registry import task_for
from common.tasks.training import make_loader, train_epochs

__all__ = ["LocalUpdate", "train_local_round"]


@dataclass(frozen=True)
class LocalUpdate:
    """Result of one local round: new weights and what may be reported about it."""

    state_dict: dict[str, torch.Tensor]
    num_examples: int
    loss: float
    steps: int
    epsilon: float | None
    privacy_state: PrivacyState | None


def _optimizer(model: nn.Module, job: FederationJob) -> torch.optim.Optimizer:
    if job.train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=job.train.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=job.train.learning_rate, momentum=0.9)


def train_local_round(
    model: nn.Module,
    data: ImageArrays,
    job: FederationJob,
    seed: int,
    privacy_state: PrivacyState | None,
    proximal_mu: float = 0.0,
) -> LocalUpdate:
    """Train ``model`` (already holding the global weights) on the site's data for one round.

    ``privacy_state`` is what the previous round returned (None on the first round); the returned
    LocalUpdate carries the state to keep for the next round, and epsilon spent so far.
    ``num_examples`` counts samples, never batches.
    """
    torch.manual_seed(seed)
    model.train()
    task = task_for(job.task)
    loader = make_loader(
        data.images, task.targets(data), job.train.batch_size, shuffle=True, seed=seed
    )
    optimizer = _optimizer(model, job)
    engine: SitePrivacyEngine | None = None
    trained: nn.Module = model
    with warnings.catch_warnings():
        # Known and documented (docs/privacy.md): Opacus' secure RNG needs torchcsprng, and its
        # hooks fire on a first layer whose input needs no gradient. Once per round is noise.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if job.privacy.enabled:
            engine = SitePrivacyEngine(
                job.privacy,
                num_samples=len(data),
                batch_size=job.train.batch_size,
                planned_epochs=job.rounds * job.train.local_epochs,
                state=privacy_state,
            )
            trained, optimizer, loader = engine.make_private(
                model, optimizer, loader, grad_sample_mode(job.model.name)
            )
        stats = train_epochs(
            trained, loader, optimizer, job.train.local_epochs, task.criterion(), proximal_mu
        )
    if engine is not None:
        engine.release(trained)
    # GradSampleModule wraps the model; `model` itself holds the trained weights either way.
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return LocalUpdate(
        state_dict=state,
        num_examples=len(data),
        loss=stats.loss,
        steps=stats.steps,
        epsilon=engine.epsilon() if engine else None,
        privacy_state=engine.export_state() if engine else None,
    )
