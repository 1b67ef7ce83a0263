"""The site's training client on a real federation: DP-SGD on its cache, deltas, its ledger.

Sites send the weight *delta* (local minus global), which stays well inside SecAgg+'s
clipping range; the coordinator adds the unmasked average back. The site decides what it
trains on and how much privacy it spends (:class:`~client.site_limits.SiteLimits`).
"""

import logging
import math
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from client.privacy_ledger import PrivacyLedger, Reservation, round_entries
from client.privacy_state import restore_privacy_state, store_privacy_state
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.data.arrays import DatasetSplits
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy import PrivacyState, planned_round
from common.tasks.registry import task_for

__all__ = ["SiteClient", "secret_seed"]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _site_data(path: Path, image_size: int, seed: int) -> DatasetSplits:
    return load_dataset(path, image_size=image_size, seed=seed)


def secret_seed(_server_round: int) -> int:
    """A seed the coordinator cannot know.

    Opacus draws its DP noise (and Poisson batches) from torch's generator: seeded from the
    job's public seed, anyone holding the job config could regenerate the noise and remove it.
    """
    return secrets.randbits(63)


class SiteClient(NumPyClient):
    """Trains the shared model on this site's cache; replies with a delta and aggregate metrics.

    The job comes from Flower's run config and the limits from the node config unless given
    (simulations). ``seed_for_round`` seeds local training; keep the default
    (:func:`secret_seed`) anywhere privacy matters. Tests pass a fixed one to compare runs.
    """

    def __init__(
        self,
        context: Context,
        seed_for_round: Callable[[int], int] = secret_seed,
        job: FederationJob | None = None,
        limits: SiteLimits | None = None,
    ) -> None:
        self.context = context
        self.seed_for_round = seed_for_round
        self.job = job or FederationJob.from_flat(context.run_config)
        self.limits = limits or SiteLimits.from_node_config(context.node_config)
        self.limits.check(self.job)
        self.data = _site_data(self.limits.data, self.job.image_size, self.job.seed)
        self._check_task_shape()
        self._check_weight()

    def _check_task_shape(self) -> None:
        if self.job.task == "segmentation" and not self.data.has_masks:
            raise ConfigError(
                f"job {self.job.name}",
                f"is a segmentation job; site {self.limits.name}'s cache has no masks "
                "(prepare it with medfed-site prepare --task segmentation)",
            )
        classes = self.data.output_classes(self.job.task)
        if self.data.in_channels != self.job.in_channels or classes != self.job.num_classes:
            kind = "mask classes" if self.job.task == "segmentation" else "classes"
            raise ConfigError(
                f"job {self.job.name}",
                f"declares {self.job.in_channels} channel(s) and {self.job.num_classes} {kind}; "
                f"site {self.limits.name}'s cache has {self.data.in_channels} and {classes}",
            )

    def _reserve_budget(
        self, ledger: PrivacyLedger, previous: PrivacyState | None, server_round: int
    ) -> Reservation:
        """Hold this round's planned epsilon; raise before training if it passes the budget."""
        planned = planned_round(
            self.job.privacy, len(self.data.train), self.job.train.batch_size,
            self.job.train.local_epochs, self.job.rounds * self.job.train.local_epochs, previous,
        )  # fmt: skip
        return ledger.reserve(
            self.job.name, str(self.context.run_id), server_round, [planned],
            self.limits.delta, self.limits.max_epsilon,
        )  # fmt: skip

    def _record_spending(
        self,
        ledger: PrivacyLedger,
        reservation: Reservation,
        previous: PrivacyState | None,
        after: PrivacyState,
        job_epsilon: float,
    ) -> float:
        """Settle the round's reservation with what it ran; the site's total epsilon after it."""
        added = round_entries(previous.history if previous else [], after.history)
        return ledger.settle(reservation, added, job_epsilon)

    def _check_weight(self) -> None:
        secure = self.job.secure_aggregation
        if secure.enabled and len(self.data.train) > secure.max_weight:
            raise ConfigError(
                f"job {self.job.name}",
                f"secure_aggregation.max_weight = {secure.max_weight:g} is below site "
                f"{self.limits.name}'s {len(self.data.train)} training images; raise it",
            )

    def _model(self, parameters: list[np.ndarray]) -> torch.nn.Module:
        size = (self.job.image_size, self.job.image_size)
        model = build_model(
            self.job.model, self.job.in_channels, self.job.num_classes, size, dp_enabled=True
        )
        names = list(model.state_dict())
        model.load_state_dict(
            {
                name: torch.from_numpy(np.asarray(array))
                for name, array in zip(names, parameters, strict=True)
            }
        )
        return model

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[list[np.ndarray], int, dict[str, bool | bytes | float | int | str]]:
        """One DP-SGD round; returns local minus global weights."""
        server_round = int(config[keys.SERVER_ROUND])
        model = self._model(parameters)
        site_job = self.job.site_job(self.limits.data)
        previous = restore_privacy_state(self.context)
        ledger = PrivacyLedger.for_site(self.limits)
        reservation = (
            None if ledger is None else self._reserve_budget(ledger, previous, server_round)
        )
        update = train_local_round(
            model,
            self.data.train,
            site_job,
            seed=self.seed_for_round(server_round),
            privacy_state=previous,
            proximal_mu=self.job.proximal_mu if self.job.strategy == "fedprox" else 0.0,
        )
        delta = [
            tensor.detach().cpu().numpy().astype(np.float32) - np.asarray(glob, dtype=np.float32)
            for tensor, glob in zip(update.state_dict.values(), parameters, strict=True)
        ]
        largest = max(float(np.abs(d).max(initial=0.0)) for d in delta)
        limit = self.job.secure_aggregation.clipping_range
        if self.job.secure_aggregation.enabled and largest > limit:
            logger.warning("update entry %.3g exceeds SecAgg+ clipping range %g", largest, limit)
        metrics: dict[str, bool | bytes | float | int | str] = {
            keys.TRAIN_LOSS: update.loss,
            keys.STEPS: update.steps,
            "site": self.limits.name,
        }
        if update.privacy_state is not None and update.epsilon is not None:
            store_privacy_state(self.context, update.privacy_state)
            metrics[keys.EPSILON] = update.epsilon
            metrics[keys.DELTA] = self.job.privacy.target_delta
            metrics[keys.NOISE_MULTIPLIER] = update.privacy_state.noise_multiplier
            if ledger is not None and reservation is not None:
                metrics[keys.EPSILON_BUDGET] = self.limits.max_epsilon
                metrics[keys.EPSILON_SITE_TOTAL] = self._record_spending(
                    ledger, reservation, previous, update.privacy_state, update.epsilon
                )
        logger.info("site %s round %d: %s", self.limits.name, server_round, metrics)
        return delta, update.num_examples, metrics

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[float, int, dict[str, bool | bytes | float | int | str]]:
        """The global model on this site's validation split."""
        if len(self.data.val) == 0:
            return math.nan, 0, {"site": self.limits.name}
        task = task_for(self.job.task)
        model = self._model(parameters)
        results = task.evaluate(model, self.data.val, task.output_names(self.data))
        loss = results.pop("loss")
        return loss, len(self.data.val), {**results, "site": self.limits.name}
