"""Initial weights for a job's global model, from a checkpoint of the same network."""

import logging
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_checkpoint
from common.errors import ConfigError
from common.federation_job import INITIAL_WEIGHTS_KEY, FederationJob
from common.models import build_model

__all__ = ["architecture_of", "initial_state"]

logger = logging.getLogger(__name__)


def architecture_of(job: FederationJob) -> dict[str, Any]:
    """What a state dict must have been trained for: network, norm and the data's shape."""
    return {
        "model": job.model.name,
        "norm": job.model.norm,
        "in_channels": job.in_channels,
        "num_classes": job.num_classes,
        "image_size": job.image_size,
    }


def _saved_architecture(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        job = saved["job"]
        return {
            "model": job["model"]["name"],
            "norm": job["model"]["norm"],
            "in_channels": int(saved["in_channels"]),
            "num_classes": int(saved["num_classes"]),
            "image_size": int(saved["image_size"][0]),
        }
    except (KeyError, TypeError, IndexError, ValueError):
        raise ConfigError(
            INITIAL_WEIGHTS_KEY, f"{path} is not a medfed checkpoint (no job description)"
        ) from None


def initial_state(job: FederationJob) -> dict[str, torch.Tensor] | None:
    """The state dict ``job.model.initial_weights`` names, None when the job names none.

    Refuses, naming both, a checkpoint trained for another network or data shape, and any
    state dict that does not load exactly (strictly) into the job's network.
    """
    if not job.model.initial_weights:
        return None
    path = Path(job.model.initial_weights)
    if not path.is_file():
        raise ConfigError(INITIAL_WEIGHTS_KEY, f"{path}: no such file")
    try:
        saved = load_checkpoint(path)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise ConfigError(
            INITIAL_WEIGHTS_KEY, f"{path} is not a readable medfed checkpoint ({exc})"
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(INITIAL_WEIGHTS_KEY, f"{path} is not a medfed checkpoint")
    found, wanted = _saved_architecture(saved, path), architecture_of(job)
    if found != wanted:
        differ = ", ".join(
            f"{key} {found[key]!r} (checkpoint) vs {wanted[key]!r} (job)"
            for key in wanted
            if found[key] != wanted[key]
        )
        raise ConfigError(
            INITIAL_WEIGHTS_KEY, f"{path} was trained for another architecture: {differ}"
        )
    size = job.spatial_shape
    model = build_model(job.model, job.in_channels, job.num_classes, size, job.privacy.enabled)
    try:
        model.load_state_dict(saved["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ConfigError(
            INITIAL_WEIGHTS_KEY, f"{path} does not fit the job's {job.model.name}: {exc}"
        ) from None
    logger.info("global model starts from %s", path)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
