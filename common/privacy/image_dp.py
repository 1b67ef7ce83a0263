"""Image-level DP-SGD at the site on Opacus' PrivacyEngine, whose accountant spans every round.

DP-SGD: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (arXiv:1607.00133).

Flower may run each round of a site in a fresh process, so the part of Opacus' PrivacyEngine
that must outlive a round, its accountant history, is exported as a :class:`PrivacyState` after
every round and restored before the next. The noise multiplier is calibrated once, for all the
rounds the job plans, so the target epsilon is reached at the end of the job and not before.

A step (:meth:`SitePrivacyEngine.step`) is Opacus' DP-SGD step with the clipped sum from
common.privacy.ghost_clipping (per-sample gradients, or ghost norms where those are cheaper):
Poisson sampling at rate q, each image's gradient clipped to C, N(0, (sigma C)^2) added to the
sum, divided by the expected batch size, one accountant step. Networks that
common.privacy.per_sample_gradients cannot handle train through Opacus' wrapped model, optimizer and
loader (:meth:`SitePrivacyEngine.make_private`), the same algorithm.
"""

import math

import torch
from opacus import GradSampleModule, PrivacyEngine
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.config import PrivacyConfig
from common.privacy.accounting import PrivacyState, calibrate_noise_multiplier, epsilon_of
from common.privacy.ghost_clipping import clipped_gradient_sum
from common.privacy.per_sample_gradients import TrainableLayers, trainable_layers

__all__ = ["SitePrivacyEngine", "planned_round"]


def planned_round(
    config: PrivacyConfig,
    num_samples: int,
    batch_size: int,
    local_epochs: int,
    planned_epochs: int,
    state: PrivacyState | None,
) -> tuple[float, float, int]:
    """(noise multiplier, sample rate, steps) the next round will account, before it runs.

    Opacus' Poisson loader samples at 1 / (batches per epoch) and takes that many steps per
    epoch; the noise is the job's (calibrated now on the first round, as the engine will).
    """
    batches = max(1, math.ceil(num_samples / batch_size))
    noise = (
        state.noise_multiplier
        if state is not None
        else calibrate_noise_multiplier(config, 1.0 / batches, planned_epochs)
    )
    return noise, 1.0 / batches, local_epochs * batches


class SitePrivacyEngine:
    """An Opacus PrivacyEngine for one site's participation in one job."""

    def __init__(
        self,
        config: PrivacyConfig,
        num_samples: int,
        batch_size: int,
        planned_epochs: int,
        state: PrivacyState | None = None,
    ) -> None:
        """Create the engine, restoring the accountant from ``state`` of earlier rounds.

        Args:
            config: the privacy targets.
            num_samples: size of the site's training set.
            batch_size: expected (Poisson) batch size.
            planned_epochs: local epochs over the whole job (rounds x local epochs), used to
                calibrate the noise on the first round.
            state: the state exported after the previous round, None on the first round.
        """
        if num_samples < 1:
            raise ValueError("a site needs at least one training sample for DP-SGD")
        self.config = config
        # Opacus' Poisson loader samples at 1 / (batches per epoch): calibrate for that rate.
        sample_rate = 1.0 / max(1, math.ceil(num_samples / batch_size))
        if state is None:
            state = PrivacyState(
                noise_multiplier=calibrate_noise_multiplier(config, sample_rate, planned_epochs),
                sample_rate=sample_rate,
                unit="image",
            )
        self._state = state
        self._sample_rate = sample_rate
        # What Opacus' make_private divides the noised sum by under loss_reduction="mean".
        self._expected_batch_size = int(num_samples * sample_rate)
        self._engine = PrivacyEngine(accountant=config.accountant)
        self._engine.accountant.history = list(state.history)
        self._layers: TrainableLayers | None = None
        #: One noise buffer per trainable parameter of ``_layers``, refilled every step.
        self._noise: list[torch.Tensor] = []

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier fixed for this job."""
        return self._state.noise_multiplier

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch, as many as Opacus' Poisson loader takes: int(1 / q)."""
        return int(1 / self._sample_rate)

    def step(
        self,
        model: nn.Module,
        criterion: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: Optimizer,
        generator: torch.Generator | None = None,
    ) -> tuple[float, int]:
        """One private step on a Poisson draw of images; returns (summed loss, images used).

        Each image is drawn with probability q, as Opacus' UniformWithReplacementSampler draws
        them. An empty draw still takes the step (noise only) and is accounted.
        """
        chosen = torch.rand(len(targets), generator=generator) < self._sample_rate
        index = chosen.nonzero().reshape(-1)
        loss = self.apply_step(
            model, criterion, images[index], targets[index], optimizer, generator
        )
        return loss, len(index)

    def apply_step(
        self,
        model: nn.Module,
        criterion: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        optimizer: Optimizer,
        generator: torch.Generator | None = None,
    ) -> float:
        """DP-SGD on this batch: Opacus' clip, noise and scale; returns the summed loss.

        The noise is drawn parameter by parameter in the model's order, as Opacus draws it (the
        same values: ``normal_`` into a kept buffer draws what ``torch.normal`` of that shape
        draws). ``model`` must have no common.privacy.per_sample_gradients.fast_path_blockers.
        Its layers and trainable parameters are looked up on the first step and kept for the
        engine's round (which parameters train does not change within one).
        """
        if self._layers is None or self._layers.model is not model:
            self._layers = trainable_layers(model)
            self._noise = [torch.empty(p.shape) for p in self._layers.params]
        clipped, loss = clipped_gradient_sum(
            model, criterion, images, targets, self.config.max_grad_norm, self._layers
        )
        std = self._state.noise_multiplier * self.config.max_grad_norm
        for p, total, noise in zip(self._layers.params, clipped, self._noise, strict=True):
            noise.normal_(0.0, std, generator=generator)
            p.grad = total.add_(noise.to(p.dtype)).div_(self._expected_batch_size)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._engine.accountant.step(
            noise_multiplier=self._state.noise_multiplier, sample_rate=self._sample_rate
        )
        return loss

    def make_private(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loader: DataLoader,
        grad_sample_mode: str = "hooks",
    ) -> tuple[nn.Module, Optimizer, DataLoader]:
        """Wrap model, optimizer and loader for DP-SGD with Poisson sampling.

        ``grad_sample_mode`` is how Opacus computes per-sample gradients: "hooks" (its
        per-layer formulas) or "functorch" (vmap over torch.func; faster for the U-Nets, see
        common.models.grad_sample_mode).
        """
        private_model, private_optimizer, private_loader = self._engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self._state.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
        )
        return private_model, private_optimizer, private_loader

    @staticmethod
    def release(private_model: nn.Module) -> None:
        """Detach Opacus' hooks and per-sample gradients so the model can be trained again."""
        if isinstance(private_model, GradSampleModule):
            private_model.to_standard_module()

    def epsilon(self) -> float:
        """Epsilon spent so far, over every round of this job, at the configured delta."""
        return epsilon_of(self.config, list(self._engine.accountant.history))

    def export_state(self) -> PrivacyState:
        """State to hand to the next round's engine."""
        return PrivacyState(
            noise_multiplier=self._state.noise_multiplier,
            sample_rate=self._state.sample_rate,
            unit="image",
            history=[tuple(entry) for entry in self._engine.accountant.history],
        )
