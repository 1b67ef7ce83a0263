"""One DICOM image file reduced, as it is read, to what `prepare` keeps of it."""

from dataclasses import dataclass

import numpy as np
import pydicom

from common.data.dicom_pixels import StoredFrames, decode_stored
from common.data.quality import IntensityStats
from common.data.resample_taps import ResamplePlan, plan_resampling

__all__ = ["DecodedImage", "ImageReducer", "file_stats"]

#: Mean and standard deviation are taken over every ``_STRIDE``-th row and column (1/4 of the
#: pixels: no float copy of whole frames); minimum and maximum over every pixel.
_STRIDE = 2


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


def file_stats(frames: StoredFrames) -> IntensityStats:
    """Intensity statistics of a file's frames in modality units (see ``_STRIDE``)."""
    stats = IntensityStats()
    sample = frames.units(frames.values[:, ::_STRIDE, ::_STRIDE])
    if frames.linear:  # monotonic: the extremes are those of the stored values
        ends = frames.units(np.array([frames.values.min(), frames.values.max()]))
    else:
        ends = frames.units()
    stats.add_sampled(sample, float(ends.min()), float(ends.max()))
    return stats


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
        frames = decode_stored(ds)
        count, height, width = frames.values.shape
        stats = file_stats(frames)
        if not self.keep_pixels:
            return DecodedImage((height, width), count, stats)
        plan = plan_resampling((height, width), pixel_spacing, self.target_spacing, self.size)
        taps = frames.units(plan.gather(frames.values))  # only these pixels become float32
        return DecodedImage((height, width), count, stats, taps, plan)
