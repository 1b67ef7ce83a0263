"""Find this site's data from Flower's node config (simulated sites read their partition)."""

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from common.config import JobConfig
from common.data.arrays import DatasetSplits
from common.data.federated_split import SiteData, split_across_sites
from common.data.loading import load_dataset
from common.errors import ConfigError
from common.tasks.registry import task_for

__all__ = ["load_site_data", "output_names", "site_index"]

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


@lru_cache(maxsize=4)
def _dataset(path: Path, image_size: int, seed: int) -> DatasetSplits:
    return load_dataset(path, image_size=image_size, seed=seed)


@lru_cache(maxsize=4)
def _all_sites(job: JobConfig, num_sites: int) -> tuple[SiteData, ...]:
    splits = _dataset(job.data, job.image_size, job.seed)
    return tuple(split_across_sites(splits, num_sites, job.partition_scheme, job.seed))


def site_index(node_config: Mapping[str, object]) -> tuple[int, int]:
    """(partition id, number of partitions) from a simulated node's config."""
    try:
        partition_id = int(node_config[PARTITION_ID])  # type: ignore[call-overload]
        num_partitions = int(node_config[NUM_PARTITIONS])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "node config",
            f"needs integer '{PARTITION_ID}' and '{NUM_PARTITIONS}', got {dict(node_config)}",
        ) from None
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(
            "node config", f"{PARTITION_ID}={partition_id} not in [0, {num_partitions})"
        )
    return partition_id, num_partitions


def output_names(job: JobConfig) -> tuple[str, ...]:
    """Names of the model's output classes (image classes, or mask classes for segmentation)."""
    return task_for(job.task).output_names(_dataset(job.data, job.image_size, job.seed))


def load_site_data(job: JobConfig, node_config: Mapping[str, object]) -> tuple[int, SiteData]:
    """This site's index and data; loaded once per process and kept in memory across rounds."""
    partition_id, num_partitions = site_index(node_config)
    return partition_id, _all_sites(job, num_partitions)[partition_id]
