"""One study on the output grid: its series aligned, resampled, windowed and sliced.

The one implementation of these steps, shared by ``prepare --register/--sequences``
(common.data.registered_prepare) and ``medfed predict`` on such a model, so that a training
study gives the network what the cache holds. A channel whose sequence is missing
(``--missing-sequence zeros``) is all zeros, and then a mask channel per sequence follows the
images (1 where the study has that sequence, 0 where it was zero-filled), so the network can tell
a zero-filled channel from a dark image; the first present series is the anchor the others are
co-registered to, and its modality sets the intensity window.
"""

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from common.data.intensity import scale_to_unit, window_range
from common.data.quality import IntensityStats
from common.data.registration import TransformKind
from common.data.series_volume import SeriesVolume
from common.data.study_alignment import Alignment, align_study, on_grid
from common.data.study_alignment import output_grid as centred_grid

__all__ = ["MIN_COVERAGE", "NoSliceCovered", "StudyGrid", "study_on_grid"]

#: A grid slice is kept when every series covers at least this share of the best slice's area.
MIN_COVERAGE = 0.5


class NoSliceCovered(Exception):
    """No slice of the output grid is covered by every series of the study."""


@dataclass(frozen=True)
class StudyGrid:
    """A study's channels on the output grid, and how each present series got there."""

    grid: sitk.Image
    #: Channel index of each present series (the others are zero-filled), in channel order.
    present: tuple[int, ...]
    #: The present series' images and their alignments (grid points -> series points).
    images: list[sitk.Image]
    alignments: list[Alignment]
    #: Grid slices kept (covered by every present series), ascending.
    kept: np.ndarray
    #: [K, C, size, size] float32 in [0, 1]: the kept slices, one channel per sequence (then,
    #: with ``presence``, one mask channel per sequence: all 1 if present, all 0 if missing).
    channels: np.ndarray
    #: [Z, size, size] uint8 mask on the whole grid, moved with its series; None without one.
    mask: np.ndarray | None


def _window(channel: np.ndarray, window: str, stats: IntensityStats | None) -> np.ndarray:
    if stats is not None:
        stats.add(channel)
    low, high = window_range(window, channel if window == "percentile" else None)
    return scale_to_unit(channel, low, high)


def study_on_grid(
    volumes: list[SeriesVolume | None],
    window: str,
    spacing: float | None,
    size: int,
    reference: sitk.Image | None,
    grid: sitk.Image | None,
    transform: TransformKind,
    stats: IntensityStats | None = None,
    presence: bool = False,
) -> StudyGrid:
    """Align the present ``volumes`` (None: a missing channel), resample, window and slice.

    ``grid`` is the output grid when there is a reference (prepare builds it once per site);
    without one the grid is the anchor series' own, centred, ``size`` pixels at ``spacing``.
    ``stats`` accumulates the intensities of the kept slices before windowing (the QC report).
    ``presence`` appends one mask channel per entry of ``volumes`` (1: present, 0: missing).

    Raises:
        StudyNotAligned: a registration failed; ``index`` is the failing series' position
            among the present ones.
        NoSliceCovered: no grid slice is covered by every present series.
        ValueError: no channel is present.
    """
    present = tuple(i for i, v in enumerate(volumes) if v is not None)
    if not present:
        raise ValueError("a study needs at least one series")
    found = [v for v in volumes if v is not None]
    images = [v.image for v in found]
    alignments = align_study(images, reference, transform)
    grid = grid if grid is not None else centred_grid(images[0], spacing, size)
    mask_of = next((i for i, v in enumerate(found) if v.mask is not None), 0)
    moved, mask, coverage = on_grid(images, alignments, grid, found[mask_of].mask, mask_of)
    kept = np.flatnonzero((coverage > 0) & (coverage >= MIN_COVERAGE * coverage.max()))
    if kept.size == 0:
        raise NoSliceCovered("no slice of the output grid is covered by every series")
    scaled = [_window(c[kept], window, stats) for c in moved]
    zeros = np.zeros_like(scaled[0])
    by_channel = dict(zip(present, scaled, strict=True))
    stacked = [by_channel.get(i, zeros) for i in range(len(volumes))]
    if presence:
        stacked += [np.full_like(zeros, float(i in by_channel)) for i in range(len(volumes))]
    channels = np.stack(stacked, axis=1)
    return StudyGrid(grid, present, images, alignments, kept, channels, mask)
