"""A 2D segmentation network applied to volumes slice by slice, its masks stacked on their grid.

The axes follow ``prepare --dims 3`` (common.data.volume_prepare.series_volume): a volume is
[C, X, Y, Z] where a 2D-prepared slice is [C, Y, X] (rows, columns), so an axial slice of the
volume is the image a 2D model trained on ``prepare`` slices of the same preprocessing sees.
The stacked masks are scored with the volumes' own metrics (common.tasks.volume_metrics).
"""

import numpy as np
import torch
from torch import nn

from common.data.preprocessing_contract import PreprocessingContract
from common.errors import ConfigError

__all__ = ["check_same_preprocessing", "predict_by_slices", "stack_slices", "volume_slices"]

#: Contract fields that may differ between a 2D model's data and the volumes (the rest must
#: match: window, percentiles, spacing, size, channels, registration, task, segment names).
_MAY_DIFFER = ("dims", "versions", "sha256", "class_names")


def volume_slices(volume: np.ndarray) -> np.ndarray:
    """A volume [C, X, Y, Z] as its axial slices [Z, C, Y, X], each as 2D prepare writes one."""
    if volume.ndim != 4:
        raise ValueError(f"a volume must be [C, X, Y, Z], got shape {volume.shape}")
    return np.ascontiguousarray(volume.transpose(3, 0, 2, 1))


def stack_slices(masks: np.ndarray) -> np.ndarray:
    """Per-slice label maps [Z, Y, X] stacked into the volume's label map [X, Y, Z]."""
    if masks.ndim != 3:
        raise ValueError(f"slice masks must be [Z, Y, X], got shape {masks.shape}")
    return np.ascontiguousarray(masks.transpose(2, 1, 0))


@torch.no_grad()
def predict_by_slices(model: nn.Module, volumes: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Label maps [N, X, Y, Z] (uint8) of a 2D network run on every axial slice of each volume.

    Args:
        model: A 2D segmentation network taking [B, C, Y, X] and giving logits [B, K, Y, X].
        volumes: Images [N, C, X, Y, Z].
        batch_size: Slices per forward pass.
    """
    model.eval()
    stacked = []
    for volume in volumes:
        slices = torch.from_numpy(volume_slices(volume))
        labels = [
            model(slices[start : start + batch_size]).argmax(dim=1).to(torch.uint8)
            for start in range(0, len(slices), batch_size)
        ]
        stacked.append(stack_slices(torch.cat(labels).numpy()))
    return np.stack(stacked) if stacked else np.zeros((0, *volumes.shape[2:]), dtype=np.uint8)


def check_same_preprocessing(
    slices: PreprocessingContract | None, volumes: PreprocessingContract | None
) -> None:
    """Refuse a 2D model whose data were prepared differently from the volumes (but for dims).

    Raises:
        ConfigError: A contract is missing, or a field that changes what the network sees
            differs; the message names each field and both values.
    """
    if slices is None or volumes is None:
        missing = "the 2D model" if slices is None else "the volumes"
        raise ConfigError("preprocessing", f"{missing} carry no preprocessing contract")
    if slices.dims != 2 or volumes.dims != 3:
        raise ConfigError(
            "preprocessing",
            f"need a 2D model (dims {slices.dims}) and 3D volumes (dims {volumes.dims})",
        )
    first = slices.model_dump(mode="json", exclude=set(_MAY_DIFFER))
    second = volumes.model_dump(mode="json", exclude=set(_MAY_DIFFER))
    differences = [
        f"{key} = {first[key]!r} (2D model) vs {second.get(key)!r} (volumes)"
        for key in first
        if first[key] != second.get(key)
    ]
    if differences:
        raise ConfigError("preprocessing", "; ".join(differences))
