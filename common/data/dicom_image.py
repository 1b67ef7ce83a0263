"""One DICOM image file reduced, as it is read, to what `prepare` keeps of it."""

from dataclasses import dataclass

import numpy as np
import pydicom

from common.data.dicom_pixels import frames_from_dataset
from common.data.quality import IntensityStats
from common.data.resample_taps import ResamplePlan, plan_resampling

__all__ = ["DecodedImage", "ImageReducer"]


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file: frame size and count, intensity statistics, and resampling taps.

    The full-resolution pixels are not kept: ``taps`` holds only the pixels that resampling to
    the output size reads (``16 * size**2`` bytes per frame, 64 KiB at 64x64).
    """

    shape: tuple[int, int]
    frames: int
    #: Statistics of the frames in modality units (before normalisation).
    stats: IntensityStats
    #: Taps [F, 4, h, w] in modality units for ``plan``; None when pixels are not kept.
    taps: np.ndarray | None = None
    plan: ResamplePlan | None = None


@dataclass(frozen=True)
class ImageReducer:
    """Decodes a read dataset into a :class:`DecodedImage` for the output geometry."""

    target_spacing: float | None
    size: int
    #: False for ``medfed-site check``: decode and measure only.
    keep_pixels: bool = True

    def __call__(
        self, ds: pydicom.Dataset, pixel_spacing: tuple[float, float] | None
    ) -> DecodedImage:
        """Decode ``ds`` (raises on truncated or undecodable pixel data)."""
        frames = frames_from_dataset(ds)
        stats = IntensityStats()
        stats.add(frames)
        shape = (int(frames.shape[1]), int(frames.shape[2]))
        if not self.keep_pixels:
            return DecodedImage(shape, int(frames.shape[0]), stats)
        plan = plan_resampling(shape, pixel_spacing, self.target_spacing, self.size)
        return DecodedImage(shape, int(frames.shape[0]), stats, plan.gather(frames), plan)
