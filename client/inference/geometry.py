"""Map model-size outputs back onto the source images; re-exports dicom_affine."""

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ResizeWithPadOrCrop, Zoom

from common.data.dicom_geometry import dicom_affine

__all__ = ["dicom_affine", "to_source_size"]


def _zoomed_shape(source: tuple[int, int], zoom: tuple[float, float]) -> tuple[int, int]:
    """The size MONAI's Zoom (as used by ``resample_images``) gives a source image."""
    zoom_in = Zoom(zoom=zoom, keep_size=False, mode="nearest")
    blank = np.zeros((1, *source), np.float32)
    zoomed = zoom_in(blank)  # type: ignore[arg-type]  # MONAI accepts ndarray
    return int(zoomed.shape[1]), int(zoomed.shape[2])


def _undo_pad_or_crop(arrays: np.ndarray, zoomed: tuple[int, int]) -> np.ndarray:
    """Invert the centre crop or pad of ``resample_images``: [N, s, s] -> [N, *zoomed].

    The crop/pad offsets are read off MONAI's own transform by passing pixel indices through
    it, so the inverse matches it exactly; pixels cropped away forward come back as zeros.
    """
    size = arrays.shape[1:]
    index = np.arange(1, zoomed[0] * zoomed[1] + 1, dtype=np.int64).reshape(1, *zoomed)
    pad_or_crop = ResizeWithPadOrCrop(spatial_size=size)
    placed = np.asarray(pad_or_crop(index))[0]  # type: ignore[arg-type]  # MONAI accepts ndarray
    kept = placed > 0
    out = np.zeros((arrays.shape[0], zoomed[0] * zoomed[1]), dtype=arrays.dtype)
    out[:, placed[kept] - 1] = arrays[:, kept]
    return out.reshape(arrays.shape[0], *zoomed)


def to_source_size(
    arrays: np.ndarray,
    source: tuple[int, int],
    spacing: tuple[float, float] | None,
    target_spacing: float | None,
    nearest: bool,
) -> np.ndarray:
    """Resample model-size maps [N, s, s] back to the source images' [N, rows, cols].

    The inverse of :func:`common.data.resampling.resample_images`: without physical spacing a
    plain resize; with ``spacing`` and ``target_spacing`` the centre crop/pad is undone, then
    the zoom. ``nearest`` keeps class labels intact (masks); otherwise bilinear (heat maps).
    """
    if spacing is not None and target_spacing is not None:
        zoom = (spacing[0] / target_spacing, spacing[1] / target_spacing)
        arrays = _undo_pad_or_crop(arrays, _zoomed_shape(source, zoom))
    tensor = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))[:, None]
    mode = "nearest-exact" if nearest else "bilinear"
    resized = F.interpolate(
        tensor, size=source, mode=mode, align_corners=None if nearest else False
    )[:, 0].numpy()
    return np.rint(resized).astype(arrays.dtype) if nearest else resized
