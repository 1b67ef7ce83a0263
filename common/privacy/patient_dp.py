"""Patient-level DP-SGD: each sampled patient's gradient is clipped and noised as one unit.

DP-SGD (Abadi et al., CCS 2016, arXiv:1607.00133) with the patient, not the image, as the unit
of sampling and clipping: user-level DP-SGD as in McMahan et al., "Learning Differentially
Private Recurrent Language Models", ICLR 2018 (arXiv:1710.06963), run on Opacus' pieces:
per-image gradients from common.privacy.per_sample_gradients (Opacus' ``GradSampleModule`` for
networks it does not handle) and Opacus' accountant for the patient sampling
rate.

One step: Poisson-sample patients at rate q (common.privacy.patient_sampling); a patient's
gradient is the sum of its images' per-sample gradients (at most ``max_images_per_patient``
images); it is clipped to ``max_grad_norm`` C as a whole; the clipped sum gets Gaussian noise
N(0, (sigma C)^2) and is divided by the expected number of patients per step. Adding or
removing one patient, whatever its images, changes the clipped sum by at most C, so the
Sampled Gaussian Mechanism's accounting (Mironov et al. 2019, arXiv:1908.10530) holds per
patient.
"""

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.accountants import create_accountant
from torch import nn

from common.config import PrivacyConfig
from common.privacy.accounting import (
    PrivacyState,
    calibrate_noise_multiplier,
    epsilon_of,
)
from common.privacy.patient_sampling import PatientSampling
from common.privacy.per_sample_gradients import (
    clip_and_sum,
    fast_path_blockers,
    per_sample_gradients,
    trainable,
)

__all__ = ["PatientPrivacyEngine", "clipped_patient_sum", "wrap_for_per_sample_gradients"]

#: Images whose per-sample gradients are held at once (bounds memory, not the result).
CHUNK_IMAGES = 64


def wrap_for_per_sample_gradients(model: nn.Module, grad_sample_mode: str) -> nn.Module:
    """The model to take per-image gradients of: ``model`` itself, or Opacus' wrapper around it.

    ``model`` itself when common.privacy.per_sample_gradients handles all its layers, else
    Opacus' GradSampleModule around it (trained in place), for a mean-reduced loss;
    ``grad_sample_mode`` "functorch" forces torch.func's vmap in Opacus (see
    common.models.grad_sample_mode); anything else uses Opacus' per-layer hooks.
    """
    if not fast_path_blockers(model):
        return model
    return GradSampleModule(
        model,
        batch_first=True,
        loss_reduction="mean",
        force_functorch=grad_sample_mode == "functorch",
    )


def clipped_patient_sum(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    owners: torch.Tensor,
    num_patients: int,
    max_grad_norm: float,
    chunk_images: int = CHUNK_IMAGES,
) -> tuple[list[torch.Tensor], float]:
    """Sum over patients of each patient's summed per-image gradient, clipped to ``max_grad_norm``.

    ``owners`` [N] gives each image's patient 0..num_patients-1. ``criterion`` must be the mean
    of per-image losses (Opacus' ``loss_reduction="mean"`` then yields each image's own
    gradient). Per-image gradients are computed ``chunk_images`` at a time (memory only).
    Returns the clipped sum per trainable parameter (no noise) and the summed loss.
    """
    params = trainable(model)
    sums = [torch.zeros((num_patients, *p.shape), dtype=p.dtype) for p in params]
    total_loss = 0.0
    for start in range(0, len(targets), chunk_images):
        chunk = slice(start, start + chunk_images)
        grads, loss = per_sample_gradients(model, criterion, images[chunk], targets[chunk])
        total_loss += loss
        for total, grad in zip(sums, grads, strict=True):
            total.index_add_(0, owners[chunk], grad.to(total.dtype))
    return clip_and_sum(sums, max_grad_norm), total_loss


class PatientPrivacyEngine:
    """Patient-level DP-SGD for one site's participation in one job; the accountant spans rounds."""

    def __init__(
        self,
        config: PrivacyConfig,
        sampling: PatientSampling,
        planned_steps: int,
        state: PrivacyState | None = None,
    ) -> None:
        """Set the noise and restore the accountant's history.

        The noise is calibrated for ``planned_steps`` at the patient sampling rate on the first
        round, and taken from ``state`` on later rounds.
        """
        if state is not None and state.unit != "patient":
            raise ValueError(f"a privacy state in unit {state.unit!r} cannot continue per patient")
        self.config = config
        self.sampling = sampling
        noise = (
            state.noise_multiplier
            if state is not None
            else calibrate_noise_multiplier(config, sampling.sample_rate, steps=planned_steps)
        )
        self._state = PrivacyState(noise, sampling.sample_rate, [], unit="patient")
        self._accountant = create_accountant(config.accountant)
        self._accountant.history = list(state.history) if state is not None else []

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier fixed for this job."""
        return self._state.noise_multiplier

    @property
    def steps_per_epoch(self) -> int:
        """Steps that visit each patient once in expectation."""
        return self.sampling.steps_per_epoch

    def step(
        self,
        model: nn.Module,
        criterion: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
    ) -> tuple[float, int]:
        """One private step on a fresh draw of patients; returns (summed loss, images used).

        A draw with no patient still takes the step (noise only) and is accounted: the
        accountant assumes every step of the plan happens.
        """
        drawn = self.sampling.draw(generator)
        index = torch.from_numpy(np.concatenate(drawn) if drawn else np.zeros(0, dtype=np.int64))
        owners = torch.repeat_interleave(
            torch.arange(len(drawn)), torch.tensor([len(d) for d in drawn], dtype=torch.long)
        )
        clipped, loss = clipped_patient_sum(
            model,
            criterion,
            images[index],
            targets[index],
            owners,
            len(drawn),
            self.config.max_grad_norm,
        )
        std = self.noise_multiplier * self.config.max_grad_norm
        for p, total in zip(trainable(model), clipped, strict=True):
            noise = torch.normal(0.0, std, size=p.shape, generator=generator)
            p.grad = total.add_(noise.to(p.dtype)).div_(self.sampling.expected_patients)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._accountant.step(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sampling.sample_rate
        )
        return loss, len(index)

    def epsilon(self) -> float:
        """Epsilon per patient spent so far, over every round of this job, at the job's delta."""
        return epsilon_of(self.config, list(self._accountant.history))

    def export_state(self) -> PrivacyState:
        """State to hand to the next round's engine."""
        return PrivacyState(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sampling.sample_rate,
            history=[tuple(entry) for entry in self._accountant.history],
            unit="patient",
        )
