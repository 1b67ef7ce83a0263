"""One site's local update for one round: optional DP-SGD, FedProx, and its privacy bookkeeping."""

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.models import freeze_all_but, grad_sample_mode
from common.privacy.accounting import PrivacyState, PrivacyUnit
from common.privacy.image_dp import SitePrivacyEngine
from common.privacy.patient_dp import PatientPrivacyEngine, wrap_for_per_sample_gradients
from common.privacy.patient_sampling import PatientSampling
from common.privacy.per_sample_gradients import fast_path_blockers
from common.privacy.unit import privacy_unit
from common.tasks.registry import task_for
from common.tasks.training import EpochStats, make_loader, train_epochs, train_private_epochs

__all__ = ["LocalUpdate", "train_local_round"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalUpdate:
    """Result of one local round: new weights and what may be reported about it."""

    state_dict: dict[str, torch.Tensor]
    num_examples: int
    loss: float
    steps: int
    epsilon: float | None
    privacy_state: PrivacyState | None
    #: What ``epsilon`` protects: "patient" or "image" (None without DP).
    privacy_unit: PrivacyUnit | None = None


def _optimizer(model: nn.Module, job: FederationJob) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if job.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=job.train.learning_rate)
    return torch.optim.SGD(params, lr=job.train.learning_rate, momentum=0.9)


def _unit_for(job: FederationJob, data: ImageArrays, state: PrivacyState | None) -> PrivacyUnit:
    unit = privacy_unit(job.privacy, data)
    if state is not None and state.unit != unit:
        raise ConfigError(
            "privacy.unit",
            f"earlier rounds of this job were accounted per {state.unit}, this round would be "
            f"per {unit}: one job keeps one unit",
        )
    return unit


def _train_per_patient(
    model: nn.Module,
    data: ImageArrays,
    job: FederationJob,
    privacy_state: PrivacyState | None,
    proximal_mu: float,
) -> tuple[EpochStats, PatientPrivacyEngine]:
    task = task_for(job.task)
    sampling = PatientSampling.plan(
        data.patients,  # type: ignore[arg-type]  # privacy_unit checked it is set
        job.train.batch_size,
        job.privacy.max_images_per_patient,
    )
    if sampling.capped_patients:
        logger.info(
            "%d of %d patients have more than %d images: each step uses that many of theirs, "
            "drawn at random",
            sampling.capped_patients,
            sampling.num_patients,
            job.privacy.max_images_per_patient,
        )
    engine = PatientPrivacyEngine(
        job.privacy,
        sampling,
        planned_steps=job.rounds * job.train.local_epochs * sampling.steps_per_epoch,
        state=privacy_state,
    )
    private = wrap_for_per_sample_gradients(model, grad_sample_mode(job.model.name))
    try:
        stats = train_private_epochs(
            private,
            torch.from_numpy(data.images),
            torch.from_numpy(task.targets(data)),
            engine,
            _optimizer(model, job),
            job.train.local_epochs,
            task.criterion(job),
            proximal_mu,
        )
    finally:
        SitePrivacyEngine.release(private)
    return stats, engine


def _train_per_image(
    model: nn.Module,
    data: ImageArrays,
    job: FederationJob,
    seed: int,
    privacy_state: PrivacyState | None,
    proximal_mu: float,
) -> tuple[EpochStats, SitePrivacyEngine]:
    task = task_for(job.task)
    engine = SitePrivacyEngine(
        job.privacy,
        num_samples=len(data),
        batch_size=job.train.batch_size,
        planned_epochs=job.rounds * job.train.local_epochs,
        state=privacy_state,
    )
    optimizer = _optimizer(model, job)
    targets = task.targets(data)
    if not fast_path_blockers(model):
        stats = train_private_epochs(
            model,
            torch.from_numpy(data.images),
            torch.from_numpy(targets),
            engine,
            optimizer,
            job.train.local_epochs,
            task.criterion(job),
            proximal_mu,
        )
        return stats, engine
    loader = make_loader(data.images, targets, job.train.batch_size, shuffle=True, seed=seed)
    private, optimizer, loader = engine.make_private(
        model, optimizer, loader, grad_sample_mode(job.model.name)
    )
    try:
        stats = train_epochs(
            private, loader, optimizer, job.train.local_epochs, task.criterion(job), proximal_mu
        )
    finally:
        engine.release(private)
    return stats, engine


def train_local_round(
    model: nn.Module,
    data: ImageArrays,
    job: FederationJob,
    seed: int,
    privacy_state: PrivacyState | None,
    proximal_mu: float = 0.0,
    *,
    samples: ImageArrays | None = None,
) -> LocalUpdate:
    """Train ``model`` (already holding the global weights) on the site's data for one round.

    ``privacy_state`` is what the previous round returned (None on the first round, which
    calibrates the noise; or a plan's :meth:`~common.privacy.planning.RoundPlan.starting_state`,
    which does not); the returned LocalUpdate carries the state to keep for the next round, and
    epsilon spent so far with its unit. With DP, ``job.privacy.unit`` "patient" on data with
    patient keys runs patient-level DP-SGD (common.privacy.patient_dp); see
    common.privacy.unit.privacy_unit for data without them. ``samples`` are the round's training
    samples when the caller drew them already (``task.training_samples(data, seed, job)``).
    ``num_examples`` counts samples, never batches. Only ``job.train.trainable``'s part of the
    model trains (common.models.freeze_all_but); the rest keeps the global weights.
    """
    torch.manual_seed(seed)
    model.train()
    trained = freeze_all_but(model, job.model.name, job.train.trainable)
    if job.train.trainable != "all":
        logger.info("training %s: %d parameters", job.train.trainable, trained)
    task = task_for(job.task)
    num_examples = len(data)  # volumes, not the patches drawn from them
    data = task.training_samples(data, seed, job) if samples is None else samples
    unit = _unit_for(job, data, privacy_state) if job.privacy.enabled else None
    engine: SitePrivacyEngine | PatientPrivacyEngine | None = None
    with warnings.catch_warnings():
        # Known and documented (docs/privacy.md): Opacus' secure RNG needs torchcsprng, and its
        # hooks fire on a first layer whose input needs no gradient. Once per round is noise.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if unit == "patient":
            stats, engine = _train_per_patient(model, data, job, privacy_state, proximal_mu)
        elif unit == "image":
            stats, engine = _train_per_image(model, data, job, seed, privacy_state, proximal_mu)
        else:
            loader = make_loader(
                data.images, task.targets(data), job.train.batch_size, shuffle=True, seed=seed
            )
            stats = train_epochs(
                model,
                loader,
                _optimizer(model, job),
                job.train.local_epochs,
                task.criterion(job),
                proximal_mu,
            )
    # GradSampleModule wraps the model; `model` itself holds the trained weights either way.
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return LocalUpdate(
        state_dict=state,
        num_examples=num_examples,
        loss=stats.loss,
        steps=stats.steps,
        epsilon=engine.epsilon() if engine else None,
        privacy_state=engine.export_state() if engine else None,
        privacy_unit=unit,
    )
