"""Model checkpoints: weights plus the job that trained them (enough to rebuild the network)."""

from pathlib import Path
from typing import Any

import torch

from common.atomic_file import replaced_atomically
from common.federation_job import FederationJob

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    job: FederationJob,
    round_number: int,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a checkpoint.

    The job's data shape is repeated at the top level (channels, classes, image size, the
    output names) for readers that only need those.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": state_dict,
        "job": job.to_nested(),
        "round": round_number,
        "in_channels": job.in_channels,
        "num_classes": job.num_classes,
        "image_size": list(job.spatial_shape),
        "metrics": metrics or {},
        # Names of the outputs: image classes, or mask classes (0 = background) for segmentation.
        "class_names": list(job.output_names),
    }
    with replaced_atomically(path) as partial:
        torch.save(payload, partial)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)
