"""What `medfed-sim run` warns about before any training: pooled hospitals, sites too small."""

import logging

from common.data.arrays import DatasetSplits
from common.data.federated_split import SiteData
from common.dp_learnability import learnability_warning
from common.federation_job import FederationJob
from common.job_model import trained_parameters
from common.tasks.registry import task_for
from simulations.simulation_settings import SimulationSettings

__all__ = ["SITES_CHECKED", "pooled_hospitals_warning", "small_site_warnings"]

logger = logging.getLogger(__name__)

#: The smallest sites whose DP settings are checked (each costs a noise calibration).
SITES_CHECKED = 3


def pooled_hospitals_warning(settings: SimulationSettings, splits: DatasetSplits) -> str | None:
    """A warning when caches of several hospitals are pooled and re-split (no --partition site)."""
    if splits.train.sites is None or settings.partition == "site":
        return None
    hospitals = int(splits.train.sites.max()) + 1
    if hospitals < 2:
        return None
    return (
        f"{settings.data} holds {hospitals} hospitals' caches but --partition "
        f"{settings.partition} pools them and re-splits the images into {settings.sites} "
        "simulated sites, hiding the differences between hospitals; give --partition site to "
        "keep each hospital's own data"
    )


def small_site_warnings(job: FederationJob, sites: list[SiteData]) -> list[str]:
    """Warnings for the smallest sites whose DP-SGD settings leave them little to learn.

    Checked on the :data:`SITES_CHECKED` smallest training sets (a larger site of the same
    data has a larger expected batch, hence less noise per step); nothing without DP.
    """
    if not job.privacy.enabled:
        return []
    task = task_for(job.task)
    order = sorted(range(len(sites)), key=lambda index: len(sites[index].train))
    parameters = trained_parameters(job)
    warnings = []
    for index in order[:SITES_CHECKED]:
        samples = task.training_samples(sites[index].train, 0, job)
        warning = learnability_warning(
            f"site-{index}", job.privacy, samples, job.train.batch_size,
            job.train.local_epochs, job.rounds, parameters,
            advice=f"fewer simulated sites than {len(sites)} (--sites)" if len(sites) > 1 else "",
        )  # fmt: skip
        if warning is not None:
            warnings.append(warning)
    return warnings
