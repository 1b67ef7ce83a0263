"""Model checkpoints: weights plus what is needed to rebuild the network and read its metrics."""

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    job: BaseModel,
    round_number: int,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    metrics: dict[str, float] | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": state_dict,
        "job": job.model_dump(mode="json"),
        "round": round_number,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": list(image_size),
        "metrics": metrics or {},
        # Names of the outputs: image classes, or mask classes (0 = background) for segmentation.
        "class_names": list(class_names or ()),
    }
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)
