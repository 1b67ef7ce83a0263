"""Compare predicted masks with a site's own masks, at the source's and the model's resolution."""

import math
from pathlib import Path
from typing import Any

import numpy as np

from common.data.picture_cases import find_mask, read_mask
from common.data.resampling import resample_masks
from common.errors import DataFormatError
from common.tasks.segmentation_metrics import segmentation_metrics

__all__ = ["compare_with_mask", "mean_comparison"]


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def compare_with_mask(
    masks_folder: Path,
    image_name: str,
    predicted: np.ndarray,
    predicted_small: np.ndarray,
    spacing: tuple[float, float] | None,
    target_spacing: float | None,
    segment_names: tuple[str, ...],
) -> dict[str, Any]:
    """Dice, IoU and HD95 of one 2D prediction against the same-named mask in ``masks_folder``.

    ``original_resolution``: the prediction upsampled to the source grid (``predicted``
    [1, H, W]) against the mask as drawn; ``model_resolution``: the network's own output
    (``predicted_small``) against the mask resampled as prepare resamples training masks.
    HD95 is in mm where the image stores its spacing (NIfTI), else in pixels of each grid.

    Raises:
        DataFormatError: No mask of that name, or it cannot be read or does not fit.
    """
    path = find_mask(masks_folder, image_name)
    if path is None:
        raise DataFormatError(masks_folder, f"no mask named like {image_name}")
    try:
        truth = read_mask(path, predicted.shape[1:], len(segment_names))[None]
    except DataFormatError:
        raise
    except Exception as exc:  # Pillow and nibabel raise many types on damaged files
        raise DataFormatError(path, f"damaged: mask not readable ({type(exc).__name__})") from None
    size = predicted_small.shape[-1]
    small_truth = resample_masks(truth, spacing, target_spacing, size)
    model_spacing = None
    if spacing is not None:
        model_spacing = (target_spacing, target_spacing) if target_spacing else spacing
        if not target_spacing:  # a plain resize: each axis scaled on its own
            rows, cols = predicted.shape[1:]
            model_spacing = (spacing[0] * rows / size, spacing[1] * cols / size)
    return {
        "mask": path.name,
        "hd95_unit": "mm" if spacing is not None else "pixels",
        "original_resolution": _finite(
            segmentation_metrics(truth, predicted, segment_names, spacing)
        ),
        "model_resolution": _finite(
            segmentation_metrics(small_truth, predicted_small, segment_names, model_spacing)
        ),
    }


def mean_comparison(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the inputs compared, per resolution and metric (absent values left out)."""
    compared = [e["compared_with_mask"] for e in entries if "compared_with_mask" in e]
    units = sorted({c["hd95_unit"] for c in compared})
    means: dict[str, Any] = {"inputs": len(compared), "hd95_unit": "/".join(units)}
    for resolution in ("original_resolution", "model_resolution"):
        keys = {k for c in compared for k in c[resolution]}
        values = {
            k: [c[resolution][k] for c in compared if c[resolution].get(k) is not None]
            for k in sorted(keys)
        }
        means[resolution] = {k: float(np.mean(v)) for k, v in values.items() if v}
    return means
