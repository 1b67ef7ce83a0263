"""Labelled data the coordinator holds (not the hospitals'), on which the threshold is chosen."""

import logging
from pathlib import Path

import numpy as np

from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.errors import DataFormatError
from common.federation_job import FederationJob

__all__ = ["load_threshold_data"]

logger = logging.getLogger(__name__)


def load_threshold_data(job: FederationJob) -> ImageArrays | None:
    """Every image of ``job.threshold_data`` (train, val and test joined); None when unset.

    The images must fit the job's network, carry the job's class names where both name their
    classes, have been prepared as the job's preprocessing contract says where both record
    one, and hold both classes: data that would silently choose a meaningless threshold is
    refused, naming the path and the reason.

    Raises:
        DataFormatError: the data is missing, unreadable or does not fit the job.
    """
    if not job.threshold_data:
        return None
    path = Path(job.threshold_data)
    splits = load_dataset(path, image_size=job.image_size, seed=job.seed)
    if (splits.in_channels, splits.image_size) != (job.in_channels, job.spatial_shape):
        raise DataFormatError(
            path,
            f"threshold data of {splits.in_channels} channel(s) at {splits.image_size}, but the "
            f"job's network takes {job.in_channels} at {job.spatial_shape}",
        )
    if job.class_names and ",".join(splits.class_names) != job.class_names:
        raise DataFormatError(
            path,
            f"threshold data classes {','.join(splits.class_names)} differ from the job's "
            f"{job.class_names}",
        )
    if job.preprocessing is not None and splits.preprocessing is not None:
        differences = job.preprocessing.differences(splits.preprocessing)
        if differences:
            raise DataFormatError(
                path, f"threshold data prepared differently: {'; '.join(differences)}"
            )
    data = ImageArrays.concatenate([splits.train, splits.val, splits.test])
    counts = np.bincount(data.labels, minlength=2)
    if len(counts) != 2 or counts.min() == 0:
        raise DataFormatError(
            path,
            f"threshold data needs images of both classes and no others (per class: "
            f"{counts.tolist()})",
        )
    logger.info(
        "decision threshold chosen on %s: %d images (%d of class 1), not the sites' data",
        path, len(data), int(counts[1]),
    )  # fmt: skip
    return data
