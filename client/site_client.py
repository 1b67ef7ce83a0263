"""The site's training client: DP-SGD on its own data, weight deltas out, its privacy ledger.

Sites send the weight *delta* (local minus global), which stays well inside SecAgg+'s
clipping range; the coordinator adds the unmasked average back. The site decides what it
trains on and how much privacy it spends (:class:`~client.site_limits.SiteLimits`), on a real
federation and in a simulation alike.
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
from client.site_context import simulated_site, site_limits
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.config import is_segmentation
from common.data.arrays import DatasetSplits, ImageArrays
from common.data.loading import load_dataset
from common.dp_learnability import learnability_warning, unplannable_warning
from common.errors import ConfigError, MedfedError
from common.federation_job import FederationJob
from common.job_model import build_job_model, trained_parameters
from common.local_training import train_local_round
from common.model_packing import layout_of, unpack_arrays
from common.privacy.accounting import PrivacyState
from common.privacy.planning import RoundPlan, plan_round
from common.simulation_environment import SimulationEnvironment
from common.tasks import classification
from common.tasks.registry import task_for
from common.tasks.threshold import encode_counts, score_counts
from common.update_precision import UpdateOverflow, to_update_precision

__all__ = ["SiteClient", "SiteDroppedOut", "clip_update_norm", "secret_seed"]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _site_data(path: Path, image_size: int, seed: int) -> DatasetSplits:
    return load_dataset(path, image_size=image_size, seed=seed)


def _drop_round(simulated: tuple[int, SimulationEnvironment] | None) -> int | None:
    if simulated is None:
        return None
    index, environment = simulated
    return environment.drops().get(index)


def _hostile_kind(simulated: tuple[int, SimulationEnvironment] | None) -> str | None:
    if simulated is None:
        return None
    index, environment = simulated
    return environment.hostile_sites().get(index)


def _poisoned(
    kind: str, delta: list[np.ndarray], num_examples: int, max_norm: float
) -> tuple[list[np.ndarray], int]:
    """A hostile simulated site's reply (see HOSTILE_KINDS): what a modified client could send.

    Applied after the site's own checks and clipping, as a hospital controlling its machine
    could skip them; SecAgg+'s mod still masks what this returns.
    """
    if kind == "nan":
        return [np.full_like(d, np.nan) for d in delta], num_examples
    if kind == "huge":
        return [np.full_like(d, 1e30) for d in delta], num_examples
    if kind == "scale1000":
        return [d * np.float32(1000) for d in delta], num_examples
    if kind == "flip":  # reversed and stretched to just inside the norm bound
        norm = float(np.sqrt(sum(np.square(d, dtype=np.float64).sum() for d in delta)))
        scale = np.float32(-0.999 * max_norm / norm) if norm > 0 else np.float32(0)
        return [d * scale for d in delta], num_examples
    if kind == "wrong-shape":
        return [delta[0][:-1], *delta[1:]], num_examples
    if kind == "inflated-examples":
        return delta, 10**9
    if kind == "negative-examples":  # a negative weight in the mean amplifies the others
        return delta, -num_examples
    raise ValueError(f"unknown hostile kind {kind!r}")


def secret_seed(_server_round: int) -> int:
    """A seed the coordinator cannot know.

    Opacus draws its DP noise (and Poisson batches) from torch's generator: seeded from the
    job's public seed, anyone holding the job config could regenerate the noise and remove it.
    """
    return secrets.randbits(63)


def clip_update_norm(delta: list[np.ndarray], max_norm: float) -> list[np.ndarray]:
    """``delta`` scaled down to L2 norm ``max_norm`` if it is longer (before any masking).

    The coordinator refuses a longer delta, and under SecAgg+ a longer unmasked mean, so a
    site bounds its own update; the bound holds the sum's norm where SecAgg+ hides the parts.
    """
    norm = float(np.sqrt(sum(np.square(d, dtype=np.float64).sum() for d in delta)))
    if norm <= max_norm:
        return delta
    logger.info("update L2 norm %.4g clipped to the job's max_update_norm %g", norm, max_norm)
    scale = np.float32(max_norm / norm)
    return [(d * scale).astype(d.dtype) for d in delta]


class SiteDroppedOut(MedfedError):
    """A simulated site scripted to stop answering from a given round (drop-out studies)."""


def _simulated_seeds(job_seed: int, site: int) -> Callable[[int], int]:
    return lambda server_round: job_seed * 100_003 + server_round * 1_009 + site


class SiteClient(NumPyClient):
    """Trains the shared model on this site's data; replies with a delta and aggregate metrics.

    The job comes from Flower's run config and the limits from the site's own node config
    (see :mod:`client.site_context`) unless given. ``seed_for_round`` seeds local training;
    keep the default (:func:`secret_seed`) anywhere privacy matters. A simulation may fix it
    (``fixed_seeds``) to compare runs.
    """

    def __init__(
        self,
        context: Context,
        seed_for_round: Callable[[int], int] | None = None,
        job: FederationJob | None = None,
        limits: SiteLimits | None = None,
    ) -> None:
        self.context = context
        self.job = job or FederationJob.from_flat(context.run_config)
        self.limits = limits or site_limits(context)
        self.limits.check(self.job)
        self.job = self.limits.enforced(self.job)
        simulated = simulated_site(context)
        self.simulated = simulated is not None
        self.drops_from = _drop_round(simulated)
        self.hostile = _hostile_kind(simulated)  # tests only: never set at a hospital
        if seed_for_round is None and simulated is not None and simulated[1].fixed_seeds:
            seed_for_round = _simulated_seeds(self.job.seed, simulated[0])
        self.seed_for_round = seed_for_round or secret_seed
        self.data = _site_data(self.limits.data, self.job.image_size, self.job.seed)
        self._check_task_shape()
        self._check_weight()

    def _answer_or_drop(self, server_round: int) -> None:
        if self.drops_from is not None and server_round >= self.drops_from:
            raise SiteDroppedOut(
                f"site {self.limits.name} dropped out at round {server_round} (scripted)"
            )

    def _check_task_shape(self) -> None:
        if len(self.data.image_size) != len(self.job.spatial_shape):
            raise ConfigError(
                f"job {self.job.name}",
                f"trains on {len(self.job.spatial_shape)}D samples; site {self.limits.name}'s "
                f"cache holds {len(self.data.image_size)}D ones",
            )
        if is_segmentation(self.job.task) and not self.data.has_masks:
            raise ConfigError(
                f"job {self.job.name}",
                f"is a segmentation job; site {self.limits.name}'s cache has no masks "
                "(prepare it with medfed-site prepare --task segmentation)",
            )
        classes = self.data.output_classes(self.job.task)
        if self.data.in_channels != self.job.in_channels or classes != self.job.num_classes:
            kind = "mask classes" if is_segmentation(self.job.task) else "classes"
            raise ConfigError(
                f"job {self.job.name}",
                f"declares {self.job.in_channels} channel(s) and {self.job.num_classes} {kind}; "
                f"site {self.limits.name}'s cache has {self.data.in_channels} and {classes}",
            )
        expected = self.job.preprocessing
        differing = expected.differences(self.data.preprocessing) if expected else []
        if differing:
            raise ConfigError(
                f"job {self.job.name}",
                f"expects other preprocessing than site {self.limits.name}'s cache: "
                + "; ".join(differing),
            )

    def _plan(self, samples: ImageArrays, previous: PrivacyState | None) -> RoundPlan:
        """The round's DP plan, made once: the warning, the reservation and training share it.

        Before a real site's first DP round, says in its log when DP leaves it little to learn
        (medfed-sim warns before it starts the sites).
        """
        train = self.job.train
        warn = previous is None and not self.simulated
        try:
            plan = plan_round(
                self.job.privacy, samples, train.batch_size, train.local_epochs, self.job.rounds,
                previous,
            )  # fmt: skip
        except ConfigError as error:
            if warn:
                logger.warning("%s", unplannable_warning(self.limits.name, error))
            raise
        if not warn:
            return plan
        warning = learnability_warning(
            self.limits.name, self.job.privacy, samples, train.batch_size, train.local_epochs,
            self.job.rounds, trained_parameters(self.job), plan=plan,
        )  # fmt: skip
        if warning is not None:
            logger.warning("%s", warning)
        return plan

    def _reserve_budget(
        self, ledger: PrivacyLedger, plan: RoundPlan, server_round: int
    ) -> Reservation:
        """Hold this round's planned epsilon; raise before training if it passes the budget."""
        return ledger.reserve(
            self.job.name, str(self.context.run_id), server_round, [plan.accounting],
            self.limits.delta, self.limits.max_epsilon, unit=plan.unit,
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

    def _model(self, parameters: list[np.ndarray]) -> tuple[torch.nn.Module, list[np.ndarray]]:
        """The job's model holding the global weights sent, and those weights as arrays.

        The coordinator sends them as one packed vector (:mod:`common.model_packing`); one of
        any other size, or anything else, is refused before training.
        """
        model = build_job_model(self.job)
        state = model.state_dict()
        layout = layout_of([tensor.numpy() for tensor in state.values()])
        try:
            (packed,) = parameters
            arrays = unpack_arrays(np.asarray(packed), layout)
        except ValueError as error:  # a wrong count, or ModelPackingError
            raise MedfedError(
                f"site {self.limits.name}: the global model sent does not fit job "
                f"{self.job.name}'s model ({len(parameters)} arrays received): {error}"
            ) from None
        model.load_state_dict(
            {name: torch.from_numpy(array) for name, array in zip(state, arrays, strict=True)}
        )
        return model, arrays

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[list[np.ndarray], int, dict[str, bool | bytes | float | int | str]]:
        """One DP-SGD round; returns local minus global weights."""
        server_round = int(config[keys.SERVER_ROUND])
        self._answer_or_drop(server_round)
        model, global_arrays = self._model(parameters)
        previous = restore_privacy_state(self.context)
        seed = self.seed_for_round(server_round)
        # the samples the round trains on (3D: patches), drawn once for the plan and training
        samples = task_for(self.job.task).training_samples(self.data.train, seed, self.job)
        # Without DP a round has no finite epsilon to account (only a site that does not
        # require DP, e.g. a simulated one, gets here).
        plan = self._plan(samples, previous) if self.job.privacy.enabled else None
        ledger = PrivacyLedger.for_site(self.limits) if plan is not None else None
        reservation = (
            None
            if ledger is None or plan is None
            else self._reserve_budget(ledger, plan, server_round)
        )
        update = train_local_round(
            model,
            self.data.train,
            self.job,
            seed=seed,
            privacy_state=previous if plan is None else plan.starting_state(previous),
            proximal_mu=self.job.proximal_mu,
            samples=samples,
        )
        delta = [
            tensor.detach().cpu().numpy().astype(np.float32) - np.asarray(glob, dtype=np.float32)
            for tensor, glob in zip(update.state_dict.values(), global_arrays, strict=True)
        ]
        if not all(np.isfinite(d).all() for d in delta):
            raise MedfedError(f"site {self.limits.name}: training diverged (non-finite update)")
        limit_norm = self.job.secure_aggregation.max_update_norm
        delta = clip_update_norm(delta, limit_norm)
        largest = max(float(np.abs(d).max(initial=0.0)) for d in delta)
        limit = self.job.secure_aggregation.clipping_range
        if self.job.secure_aggregation.enabled and largest > limit:
            logger.warning("update entry %.3g exceeds SecAgg+ clipping range %g", largest, limit)
        delta = self._at_update_precision(delta)
        metrics: dict[str, bool | bytes | float | int | str] = {
            keys.TRAIN_LOSS: update.loss,
            keys.STEPS: update.steps,
            keys.SITE_NAME: self.limits.name,
        }
        if update.privacy_state is not None and update.epsilon is not None:
            store_privacy_state(self.context, update.privacy_state)
            metrics[keys.EPSILON] = update.epsilon
            metrics[keys.DELTA] = self.job.privacy.target_delta
            metrics[keys.NOISE_MULTIPLIER] = update.privacy_state.noise_multiplier
            metrics[keys.PRIVACY_UNIT] = update.privacy_unit or "image"
            if ledger is not None and reservation is not None:
                metrics[keys.EPSILON_BUDGET] = self.limits.max_epsilon
                metrics[keys.EPSILON_SITE_TOTAL] = self._record_spending(
                    ledger, reservation, previous, update.privacy_state, update.epsilon
                )
        logger.info("site %s round %d: %s", self.limits.name, server_round, metrics)
        if self.hostile is not None:
            logger.warning("simulated site %s sends a %s update", self.limits.name, self.hostile)
            sent, count = _poisoned(self.hostile, delta, update.num_examples, limit_norm)
            return sent, count, metrics
        return delta, update.num_examples, metrics

    def _at_update_precision(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """The delta at the job's upload precision (float32 unless it asks for float16)."""
        try:
            sent, loss = to_update_precision(delta, self.job.update_dtype)
        except UpdateOverflow as error:
            raise MedfedError(f"site {self.limits.name}: {error}") from None
        if loss.flushed_to_zero:
            logger.info(
                "site %s: %d of %d nonzero delta entries are below %s's smallest value (sent as 0)",
                self.limits.name, loss.flushed_to_zero, loss.nonzero, self.job.update_precision,
            )  # fmt: skip
        logger.info(
            "site %s: delta sent as %s, relative L2 rounding error %.2g",
            self.limits.name, self.job.update_precision, loss.relative_error,
        )  # fmt: skip
        return sent

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[float, int, dict[str, bool | bytes | float | int | str]]:
        """The global model on this site's validation split."""
        self._answer_or_drop(int(config[keys.SERVER_ROUND]))
        if len(self.data.val) == 0:
            return math.nan, 0, {keys.SITE_NAME: self.limits.name}
        task = task_for(self.job.task)
        # The job's output names where it declares them, else the site's own.
        names = self.job.output_names if self.job.class_names else task.output_names(self.data)
        model, _ = self._model(parameters)
        results: dict[str, bool | bytes | float | int | str] = {
            **task.evaluate(model, self.data.val, names)
        }
        loss = float(results.pop("loss"))
        # Counts only where the coordinator chooses the threshold from them (not on its own
        # threshold data): they describe the validation patients (docs/privacy.md).
        if self.job.task == "classification" and len(names) == 2 and not self.job.threshold_data:
            scores = classification.predict_probabilities(model, self.data.val)[:, 1]
            results[keys.SCORE_COUNTS] = encode_counts(score_counts(self.data.val.labels, scores))
        return loss, len(self.data.val), {**results, keys.SITE_NAME: self.limits.name}
