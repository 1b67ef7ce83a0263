"""The network a job trains, built from the job alone: the one check that DP-SGD can train it."""

from torch import nn

from common.federation_job import FederationJob
from common.models import build_model, freeze_all_but

__all__ = ["build_job_model", "trained_parameters"]


def build_job_model(job: FederationJob) -> nn.Module:
    """``job``'s network at its data shape, checked for DP-SGD when the job's privacy is on.

    Every entry point calls it before anything starts (``medfed-sim run``, ``medfed-server
    run``) and the ServerApp builds its model with it, so a job is refused with one message.

    Raises:
        ModelNotPrivacyCompatibleError: DP is on and the network has layers DP-SGD cannot
            train (e.g. ``model.norm = "batch"``); the message names each layer.
        ConfigError: the network cannot be built at the job's data shape.
    """
    return build_model(
        job.model, job.in_channels, job.num_classes, job.spatial_shape, job.privacy.enabled
    )


def trained_parameters(job: FederationJob) -> int:
    """How many of the network's parameters the job trains (``train.trainable``)."""
    return freeze_all_but(build_job_model(job), job.model.name, job.train.trainable)
