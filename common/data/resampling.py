"""Resample 2D images to a target pixel spacing, then crop or pad to a fixed size (MONAI)."""

import numpy as np
from monai.transforms import Resize, ResizeWithPadOrCrop, Zoom

__all__ = ["resample_images", "resample_masks"]


def resample_images(
    images: np.ndarray,
    spacing: tuple[float, float] | None,
    target_spacing: float | None,
    size: int,
    mode: str = "bilinear",
) -> np.ndarray:
    """[N, H, W] -> [N, size, size], all N images in one call (e.g. the slices of a series).

    With a known ``spacing`` and a ``target_spacing`` (mm per pixel) the image is zoomed so a
    pixel covers ``target_spacing`` mm, then centre-cropped or zero-padded to ``size``: anatomy
    keeps its physical scale across scanners. Otherwise it is resized to ``size`` directly.
    """
    channel_first = images.astype(np.float32, copy=False)
    if spacing is not None and target_spacing is not None:
        zoom = (spacing[0] / target_spacing, spacing[1] / target_spacing)
        zoom_in = Zoom(zoom=zoom, keep_size=False, mode=mode)
        zoomed = zoom_in(channel_first)  # type: ignore[arg-type]  # MONAI accepts ndarray
        out = ResizeWithPadOrCrop(spatial_size=(size, size))(zoomed)
    else:
        resize = Resize(spatial_size=(size, size), mode=mode)
        out = resize(channel_first)  # type: ignore[arg-type]  # MONAI accepts ndarray
    return np.asarray(out, dtype=np.float32)


def resample_masks(
    masks: np.ndarray,
    spacing: tuple[float, float] | None,
    target_spacing: float | None,
    size: int,
) -> np.ndarray:
    """Label maps [N, H, W] on the same grid as :func:`resample_images` (nearest neighbour)."""
    resampled = resample_images(masks, spacing, target_spacing, size, mode="nearest")
    return np.rint(resampled).astype(np.uint8)
