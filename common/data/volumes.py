"""One series as one volume: resampled to isotropic spacing, cropped or padded to a cube (MONAI).

Volumes are indexed like NIfTI arrays, (x, y, z) = (column, row, slice), and each carries the
affine (voxel index to RAS mm) that MONAI's transforms track through resampling and cropping,
so a prediction on the volume can be written back in scanner coordinates.
"""

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Resize, ResizeWithPadOrCrop, Spacing, SpatialResample, Zoom

__all__ = [
    "Volume",
    "prepared_slices_affine",
    "resample_volume",
    "to_source_grid",
    "voxel_spacing",
]


@dataclass(frozen=True)
class Volume:
    """A volume [X, Y, Z] (float32 in [0, 1]), its label map (uint8) or None, and its affine."""

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the lengths of the affine's columns."""
    x, y, z = (float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return x, y, z


def _grid(
    volume: np.ndarray, affine: np.ndarray, spacing: float | None, size: int, mode: str
) -> MetaTensor:
    """``volume`` at ``spacing`` mm (or resized without physical scale), then a centred cube."""
    tensor = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None],
        affine=torch.as_tensor(affine, dtype=torch.float64),
    )
    if spacing is not None:
        resampled = Spacing(pixdim=(spacing,) * 3, mode=mode, padding_mode="zeros")(tensor)
    else:
        interpolation = "nearest" if mode == "nearest" else "trilinear"
        resize = Resize(spatial_size=(size,) * 3, mode=interpolation)
        resampled = resize(tensor)
    out = ResizeWithPadOrCrop(spatial_size=(size,) * 3)(resampled)
    assert isinstance(out, MetaTensor)  # MetaTensor in, MetaTensor out
    return out


def resample_volume(
    image: np.ndarray,
    mask: np.ndarray | None,
    affine: np.ndarray,
    spacing: float | None,
    size: int,
) -> Volume:
    """Resample ``image`` [X, Y, Z] (bilinear) and ``mask`` (nearest) onto one cubic grid.

    With ``spacing`` (mm) voxels become isotropic ``spacing`` mm (MONAI's Spacing), then the
    volume is centre-cropped or zero-padded to ``size``^3; without it the volume is resized to
    ``size``^3. Both arrays land on the same grid, whose affine is returned.
    """
    resampled = _grid(image, affine, spacing, size, "bilinear")
    labels = None
    if mask is not None:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the image's {image.shape}")
        nearest = _grid(mask, affine, spacing, size, "nearest")
        labels = np.rint(nearest.numpy()[0]).astype(np.uint8)
    return Volume(
        image=np.clip(resampled.numpy()[0], 0.0, 1.0).astype(np.float32),
        mask=labels,
        affine=resampled.affine.numpy().astype(np.float64),
    )


def prepared_slices_affine(
    source_affine: np.ndarray,
    source_shape: tuple[int, int],
    pixel_spacing: tuple[float, float] | None,
    target_spacing: float | None,
    size: int,
) -> np.ndarray:
    """The affine of a series' 2D-prepared slices stacked as [X, Y, Z] (columns, rows, slices).

    ``source_affine`` indexes the source slices (column, row, slice) (common.data.dicom_geometry);
    ``common.data.resampling.resample_images`` zoomed and cropped each slice in plane. The same
    MONAI transforms run on an empty image of the source's shape, and the affine they track
    composes with the source's.
    """
    rows, columns = source_shape
    blank = MetaTensor(torch.zeros(1, columns, rows), affine=torch.eye(3, dtype=torch.float64))
    if pixel_spacing is not None and target_spacing is not None:
        zoom = (pixel_spacing[1] / target_spacing, pixel_spacing[0] / target_spacing)
        zoomed = Zoom(zoom=zoom, keep_size=False, mode="nearest")(blank)
        placed = ResizeWithPadOrCrop(spatial_size=(size, size))(zoomed)
    else:
        placed = Resize(spatial_size=(size, size), mode="nearest")(blank)
    assert isinstance(placed, MetaTensor)  # as in _grid
    in_plane = placed.affine.numpy()
    step = np.eye(4)
    step[:2, :2] = in_plane[:2, :2]
    step[:2, 3] = in_plane[:2, 2]
    return np.asarray(source_affine, dtype=np.float64) @ step


def to_source_grid(
    labels: np.ndarray,
    affine: np.ndarray,
    source_affine: np.ndarray,
    source_shape: tuple[int, int, int],
) -> np.ndarray:
    """A label map [X, Y, Z] on a volume's grid, resampled (nearest) onto the source's grid.

    The inverse of :func:`resample_volume` for masks: voxels outside the cube come back as 0.
    """
    tensor = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[None],
        affine=torch.as_tensor(affine, dtype=torch.float64),
    )
    resample = SpatialResample(mode="nearest", padding_mode="zeros")
    back = resample(
        tensor,
        dst_affine=torch.as_tensor(source_affine, dtype=torch.float64),
        spatial_size=source_shape,
    )
    return np.rint(np.asarray(back)[0]).astype(np.uint8)
