"""One DICOM series as a 3D SimpleITK volume with its patient geometry, for registration.

Files are read whole (:class:`VolumeReader`, float32 modality units): unlike the 2D path, which
keeps only the pixels in-plane resampling reads, registration needs every voxel. Memory is
therefore 4 bytes per voxel of every series until the walk ends (a 256 x 256 x 180 series:
47 MiB). The geometry comes from the headers: ImageOrientationPatient, the first slice's
ImagePositionPatient, PixelSpacing and the slice gap. A series that cannot be placed in 3D
gets the reason instead of a volume.
"""

from dataclasses import dataclass

import numpy as np
import pydicom
import SimpleITK as sitk

from common.data.dicom_image import WholeImage
from common.data.dicom_pixels import decode_stored
from common.data.dicom_scan import SeriesFiles, _normal

__all__ = ["SeriesVolume", "VolumeReader", "series_volume"]

#: Relative spread of slice gaps beyond which slices are not evenly spaced (as the QC check).
_GAP_TOLERANCE = 0.05


class VolumeReader:
    """Decodes a read dataset whole, in float32 modality units (an ImageReader of the scan)."""

    def __call__(
        self, ds: pydicom.Dataset, pixel_spacing: tuple[float, float] | None
    ) -> WholeImage:
        """Decode ``ds`` (raises on truncated or undecodable pixel data)."""
        frames = decode_stored(ds)
        values = np.asarray(frames.units(), dtype=np.float32)
        count, height, width = values.shape
        return WholeImage((height, width), count, values)


@dataclass(frozen=True)
class SeriesVolume:
    """A series as a float32 volume, and its mask volume when SEG objects cover it."""

    image: sitk.Image
    #: uint8 label volume on the image's grid (0 where no mask was given); None without masks.
    mask: sitk.Image | None


def _geometry(series: SeriesFiles) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(origin, 3x3 direction, spacing x/y/z) of an ordered series; raises ValueError why not."""
    slices = series.slices
    if len(slices) < 2:
        raise ValueError("a single image: cannot be registered in 3D")
    orientation = slices[0].orientation
    normal = _normal(orientation)
    if normal is None or orientation is None or any(s.position is None for s in slices):
        raise ValueError("no ImagePositionPatient/ImageOrientationPatient: cannot place it in 3D")
    if any(s.orientation != orientation for s in slices):
        raise ValueError("slices with different orientations: cannot place it in 3D")
    spacing = series.pixel_spacing
    if spacing is None or min(spacing) <= 0:
        raise ValueError("no valid PixelSpacing: cannot place it in 3D")
    gaps = series.slice_gaps()
    if gaps.min() <= 0 or (gaps.max() - gaps.min()) > _GAP_TOLERANCE * abs(gaps.mean()):
        raise ValueError(
            f"slice gaps from {gaps.min():.2f} to {gaps.max():.2f} mm: cannot place it in 3D"
        )
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    direction = np.stack([row, column, normal / np.linalg.norm(normal)], axis=1)
    origin = np.asarray(slices[0].position, dtype=float)
    return origin, direction, (spacing[1], spacing[0], float(gaps.mean()))


def _as_image(
    values: np.ndarray, origin: np.ndarray, direction: np.ndarray, spacing: tuple[float, ...]
) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing(list(spacing))
    return image


def series_volume(series: SeriesFiles, masks: dict[str, np.ndarray] | None) -> SeriesVolume:
    """The series read with :class:`VolumeReader` as a volume; ``masks`` by SOPInstanceUID.

    Raises:
        ValueError: the series cannot be placed in 3D (one image, no position or orientation,
            uneven gaps, multi-frame files, images of different sizes); the message says why.
    """
    origin, direction, spacing = _geometry(series)
    images = [s.image for s in series.slices]
    if not all(isinstance(i, WholeImage) for i in images):
        raise ValueError("series_volume needs a scan read with VolumeReader")
    whole = [i for i in images if isinstance(i, WholeImage)]
    if any(i.frames != 1 for i in whole):
        raise ValueError("multi-frame files: registration reads one image per file")
    if len({i.shape for i in whole}) != 1:
        raise ValueError("images of different sizes in one series: cannot stack it in 3D")
    values = np.concatenate([i.values for i in whole])
    image = _as_image(values, origin, direction, spacing)
    mask = None
    found = [masks.get(s.sop_instance_uid) for s in series.slices] if masks else []
    if any(m is not None for m in found):
        planes = [
            m if m is not None and m.shape == whole[0].shape else np.zeros(whole[0].shape, np.uint8)
            for m in found
        ]
        mask = _as_image(np.stack(planes).astype(np.uint8), origin, direction, spacing)
    return SeriesVolume(image, mask)
