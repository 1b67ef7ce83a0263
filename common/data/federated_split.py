"""Split a dataset's train and validation data across simulated sites."""

import logging
from dataclasses import dataclass

import numpy as np

from common.data.arrays import DatasetSplits, ImageArrays
from common.data.partition import (
    PartitionScheme,
    expand_groups,
    group_labels,
    label_histogram,
    partition_indices,
)

__all__ = ["SiteData", "split_across_sites"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteData:
    """One site's local training data and the validation data it evaluates the global model on."""

    train: ImageArrays
    val: ImageArrays


def split_across_sites(
    splits: DatasetSplits, num_sites: int, scheme: PartitionScheme, seed: int
) -> list[SiteData]:
    """Partition train with ``scheme``, and val with the class proportions each site got in train.

    A site's validation data thus has the same label mix as its training data, as it would in a
    hospital. With the ``site`` scheme the data's own sites are kept for train and val.
    The test split is not partitioned: it stays with the simulation as the held-out global
    test set on which federated, pooled and local models are all compared.
    Data that knows its patients is partitioned by patient: a patient's training images all go
    to one site, and so do its validation images when there are at least as many validation
    patients as sites (else validation, which no site trains on, is spread by image).
    """
    train_parts = partition_indices(
        splits.train.labels,
        num_sites,
        scheme,
        seed,
        sites=splits.train.sites,
        groups=splits.train.patients,
    )
    if scheme.kind == "site":  # each hospital validates on its own data
        val_parts = partition_indices(
            splits.val.labels, num_sites, scheme, seed, sites=splits.val.sites
        )
    else:
        counts = label_histogram(splits.train.labels, train_parts, splits.num_classes)
        rng = np.random.default_rng(seed + 1)
        val_patients = splits.val.num_patients
        if val_patients is None or val_patients < num_sites:
            if val_patients is not None:
                logger.info(
                    "%d validation patients for %d sites: validation images are spread by image "
                    "(they are never trained on)",
                    val_patients,
                    num_sites,
                )
            val_parts = _partition_like(splits.val.labels, counts, rng)
        else:  # whole patients, each labelled by its most frequent label
            assert splits.val.patients is not None  # val_patients counted them
            inverse, unit_labels = group_labels(splits.val.labels, splits.val.patients)
            val_parts = expand_groups(inverse, _partition_like(unit_labels, counts, rng))
    return [
        SiteData(train=splits.train.subset(t), val=splits.val.subset(v))
        for t, v in zip(train_parts, val_parts, strict=True)
    ]


def _partition_like(
    labels: np.ndarray, site_class_counts: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each site the same share of every class as in ``site_class_counts`` [sites, classes].

    Every site gets at least one sample when there are at least as many samples as sites.
    """
    num_sites = site_class_counts.shape[0]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for cls in range(site_class_counts.shape[1]):
        members = rng.permutation(np.flatnonzero(labels == cls))
        column = site_class_counts[:, cls].astype(np.float64)
        if column.sum() == 0:
            column = np.ones(num_sites)
        bounds = np.round(np.cumsum(column) / column.sum() * len(members)).astype(int)
        for site, chunk in enumerate(np.split(members, bounds[:-1])):
            parts[site].append(chunk)
    sites = [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
    # A site without validation data reports no metrics (Flower then refuses the round's
    # evaluation): when there is enough, move one sample to it from the largest site.
    for site in range(num_sites):
        largest = max(range(num_sites), key=lambda k: len(sites[k]))
        if len(sites[site]) == 0 and len(sites[largest]) > 1:
            sites[site], sites[largest] = sites[largest][-1:], sites[largest][:-1]
    return sites
