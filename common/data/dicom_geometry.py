"""DICOM slice geometry as a NIfTI (RAS) affine."""

from collections.abc import Sequence

import numpy as np

from common.data.dicom_scan import SliceHeader

__all__ = ["dicom_affine"]

#: DICOM patient coordinates are LPS; NIfTI world coordinates are RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_affine(slices: Sequence[SliceHeader]) -> np.ndarray | None:
    """NIfTI (RAS) affine of a slice stack indexed (column, row, slice), or None if unknown.

    Built from the first slice's position and orientation, the pixel spacing and the step
    between the first and last slice positions (the slice normal, 1 mm, for a single slice).
    """
    first, last = slices[0], slices[-1]
    if first.orientation is None or first.position is None or first.pixel_spacing is None:
        return None
    row_cosine = np.asarray(first.orientation[:3], dtype=np.float64)
    column_cosine = np.asarray(first.orientation[3:], dtype=np.float64)
    row_spacing, column_spacing = first.pixel_spacing
    origin = np.asarray(first.position, dtype=np.float64)
    if len(slices) > 1 and last.position is not None:
        step = (np.asarray(last.position, dtype=np.float64) - origin) / (len(slices) - 1)
    else:
        step = np.cross(row_cosine, column_cosine)
    if not np.any(step):
        step = np.cross(row_cosine, column_cosine)
    affine = np.eye(4)
    # Column index i moves along the row direction, row index j along the column direction.
    affine[:3, 0] = row_cosine * column_spacing
    affine[:3, 1] = column_cosine * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return _LPS_TO_RAS @ affine
