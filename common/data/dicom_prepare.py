"""Turn a folder of DICOM files into preprocessed, labelled 2D images, ready to cache.

One pass reads every file (:func:`read_dicom_folder`): header facts and the pixels that
resampling reads (see common.data.resample_taps). Once the walk has ended and each series is
complete and ordered, :func:`prepare_series` measures (QC statistics), windows and resamples
each series from those taps. Memory until the end of the walk: ``8 * size**2`` bytes per 16-bit
image (32 KiB at the default 64x64), whatever the images' resolution.
"""

import hashlib
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.data.arrays import mask_classes
from common.data.colour import channel_count
from common.data.dicom_image import (
    DecodedImage,
    ImageReducer,
    MeasuredImage,
    ReducedImage,
    stored_stats,
)
from common.data.dicom_patient import patient_identity
from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB, LinearUnits
from common.data.dicom_scan import DicomScan, SeriesFiles, scan_dicom_folder
from common.data.dicom_seg import SegmentationMasks
from common.data.intensity import PERCENTILES, WINDOW_CHOICES, window_range
from common.data.label_manifest import LabelManifest
from common.data.preprocessing_contract import PreprocessingContract, SoftwareVersions
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.resampling import resample_masks
from common.data.value_histogram import ValueHistogram
from common.errors import ConfigError

__all__ = [
    "PreparedImages",
    "PreprocessingConfig",
    "check_preprocessing_options",
    "normalise_and_resample",
    "prepare_series",
    "read_dicom_folder",
    "start_prepared",
]

logger = logging.getLogger(__name__)

#: Relative spread of slice gaps above which a series is reported as inconsistently spaced.
_GAP_TOLERANCE = 0.05


@dataclass(frozen=True)
class PreprocessingConfig:
    """How images are normalised and resampled."""

    #: 'auto' (CT: ct_window, others: percentile), 'percentile', or a preset of WINDOW_PRESETS.
    window: str = "auto"
    ct_window: str = "soft-tissue"
    #: In-plane pixel spacing in mm after resampling; None resizes without physical scaling.
    target_spacing: float | None = None
    size: int = 64
    #: Colour rule of common.data.colour (grey, rgb, r, g, b).
    channels: str = "grey"
    #: 2: each image (slice) is a sample; 3: each series is one volume (common.data.volume_prepare).
    dims: int = 2

    def window_for(self, modality: str) -> str:
        """The normalisation used for one modality."""
        if self.window != "auto":
            return self.window
        return self.ct_window if modality == "CT" else "percentile"

    def contract(
        self,
        task: str,
        class_names: tuple[str, ...],
        segment_names: tuple[str, ...] | None = None,
        channel_names: tuple[str, ...] = (),
        registration: str = "none",
        missing_sequence: str = "skip",
        presence_channels: bool = False,
    ) -> PreprocessingContract:
        """The preprocessing contract of data prepared with this configuration.

        ``presence_channels``: one mask channel per named sequence follows the images.
        """
        named = len(channel_names) * (2 if presence_channels else 1)
        return PreprocessingContract.model_validate(
            {
                "channels": named if channel_names else channel_count(self.channels),
                "channel_names": ",".join(channel_names),
                "registration": registration,
                "missing_sequence": missing_sequence,
                "presence_channels": presence_channels,
                "window": self.window,
                "ct_window": self.ct_window,
                "percentile_low": PERCENTILES[0],
                "percentile_high": PERCENTILES[1],
                "spacing_mm": self.target_spacing,
                "size": self.size,
                "colour": self.channels,
                "dims": self.dims,
                "task": task,
                "class_names": ",".join(class_names),
                "segment_names": ",".join(segment_names or ()),
                "versions": SoftwareVersions.installed(),
            }
        )

    @classmethod
    def of_contract(cls, contract: PreprocessingContract) -> "PreprocessingConfig":
        """The configuration that replays ``contract``'s normalisation and resampling.

        Registration and sequence channels are replayed from the contract by their own code
        (common.data.study_grid).

        Raises:
            ValueError: The contract scales by percentiles this medfed does not use.
        """
        wanted = (contract.percentile_low, contract.percentile_high)
        if wanted != PERCENTILES:
            raise ValueError(
                f"the data were scaled to percentiles {wanted}; this medfed scales to {PERCENTILES}"
            )
        return cls(
            window=contract.window,
            ct_window=contract.ct_window or cls.ct_window,
            target_spacing=contract.spacing_mm,
            size=contract.size,
            channels=contract.colour,
            dims=contract.dims,
        )


def check_preprocessing_options(window: str, ct_window: str, spacing: float | None) -> None:
    """Refuse, naming the option, a window that is not in WINDOW_CHOICES or a spacing <= 0."""
    for name, value in (("--window", window), ("--ct-window", ct_window)):
        if value not in WINDOW_CHOICES:
            raise ConfigError(name, f"{value!r} is not one of {WINDOW_CHOICES}")
    if spacing is not None and spacing <= 0:
        raise ConfigError("--spacing", f"{spacing} must be a positive number of mm")


@dataclass
class PreparedImages:
    """Preprocessed images with labels and pseudonymous keys only."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    series_keys: list[str] = field(default_factory=list)
    study_keys: list[str] = field(default_factory=list)
    #: Unkeyed SHA-256 of each image's StudyInstanceUID, held in memory only, so the split by
    #: study is the same whichever site key prepared the data. Never written anywhere.
    split_keys: list[str] = field(default_factory=list)
    slice_indices: list[int] = field(default_factory=list)
    #: Keyed pseudonym of each image's patient (common.data.dicom_patient), for patient-level DP.
    patient_keys: list[str] = field(default_factory=list)
    #: Label maps [size, size] (uint8 class per pixel), for segmentation data only.
    masks: list[np.ndarray] = field(default_factory=list)
    segment_names: tuple[str, ...] | None = None
    #: Volumes only: each volume's affine (voxel index to RAS mm), 4 x 4.
    affines: list[np.ndarray] = field(default_factory=list)
    #: Names of the image channels when there are several (NIfTI multi-channel volumes).
    channel_names: tuple[str, ...] = ()

    def add_series(
        self,
        labels: list[int],
        slice_indices: list[int],
        series_key: str,
        study_key: str,
        split_key: str,
        images: list[np.ndarray] | np.ndarray | None,
        masks: np.ndarray | None = None,
        patient_key: str = "",
    ) -> None:
        """Append one series' labelled images (``images`` None when pixels are not kept).

        ``patient_key`` defaults to ``study_key`` (each study its own patient).
        """
        self.labels.extend(labels)
        self.patient_keys.extend([patient_key or study_key] * len(labels))
        self.slice_indices.extend(slice_indices)
        self.series_keys.extend([series_key] * len(labels))
        self.study_keys.extend([study_key] * len(labels))
        self.split_keys.extend([split_key] * len(labels))
        if images is not None:
            self.images.extend(images)
        if masks is not None:
            self.masks.extend(masks)


def split_key_of(study_id: str) -> str:
    """Unkeyed SHA-256 of a study identifier: orders studies for the split, kept in memory."""
    return hashlib.sha256(study_id.encode()).hexdigest()


def _check_spacing(series: SeriesFiles, key: str, report: QualityReport) -> None:
    gaps = series.slice_gaps()
    if gaps.size >= 2 and (gaps.max() - gaps.min()) > _GAP_TOLERANCE * max(abs(gaps.mean()), 1e-6):
        report.inconsistent_spacing.append(
            {"series": key, "min_gap_mm": float(gaps.min()), "max_gap_mm": float(gaps.max())}
        )


def read_dicom_folder(
    root: Path,
    config: PreprocessingConfig,
    keep_pixels: bool = True,
    on_file: Callable[[int, int], None] | None = None,
    max_pixel_mib: float = DEFAULT_MAX_PIXEL_MIB,
) -> DicomScan:
    """Read and decode every file under ``root`` once, for :func:`prepare_series`.

    Files declaring more than ``max_pixel_mib`` MiB of decoded pixels are refused unread.
    """
    reducer = ImageReducer(config.target_spacing, config.size, keep_pixels)
    return scan_dicom_folder(root, on_file, reducer, max_pixel_mib)


def _window_bounds(
    images: list[DecodedImage], window: str
) -> tuple[float, float, IntensityStats | None]:
    """The values one series' window maps to 0 and 1, and its taps' statistics if counted.

    The statistics come for free with a histogram (else None: :func:`_scaled_taps` measures
    them). Percentiles are taken over the series' taps. When its files share one linear mapping of
    integer stored values (the usual case) the stored values are counted in a histogram, whose
    percentiles and moments map to units (a linear map keeps order statistics and their
    interpolation); otherwise np.percentile runs over the taps converted to units.
    """
    if window != "percentile":
        return (*window_range(window), None)
    units = {i.units for i in images}
    histogram = None
    if len(units) == 1:
        histogram = ValueHistogram.of(np.concatenate([i.taps.ravel() for i in images]))
    if histogram is None:
        values = np.concatenate([i.units.to_units(i.taps).ravel() for i in images])
        return (*window_range(window, values), None)
    (mapping,) = units
    low, high = sorted(float(mapping.of(v)) for v in histogram.percentiles(PERCENTILES))
    count, total, total_sq, minimum, maximum = histogram.moments()
    stats = IntensityStats()
    ends = sorted(float(mapping.of(v)) for v in (minimum, maximum))
    stats.add_moments(count, *mapping.moments(count, total, total_sq), *ends)
    return low, high, stats


def _runs(images: list[DecodedImage]) -> Iterator[tuple[LinearUnits, int]]:
    """(units, frame count) of each run of consecutive files with the same units."""
    for units, run in itertools.groupby(images, key=lambda i: i.units):
        yield units, sum(i.frames for i in run)


def _measure_runs(stats: IntensityStats, taps: np.ndarray, images: list[DecodedImage]) -> None:
    """Add the QC statistics of float32 stored ``taps`` (frames of ``images``, in order)."""
    start = 0
    for units, frames in _runs(images):
        stats.merge(stored_stats(taps[start : start + frames], units))
        start += frames


def _scaled_taps(
    images: list[DecodedImage], low: float, high: float, stats: IntensityStats | None
) -> np.ndarray:
    """Taps [F, 4, h, w] of files resampled the same way, windowed to [0, 1] (float32).

    Stored value -> unit -> window is one affine map per run of files with the same units
    (usually the whole series), applied in place on one float32 copy, then one clip. With
    ``stats`` the QC statistics of the taps are added to it from that copy, before windowing.
    """
    taps = np.concatenate([i.taps for i in images], dtype=np.float32)
    if stats is not None:
        _measure_runs(stats, taps, images)
    width = high - low
    start = 0
    for units, frames in _runs(images):
        part = taps[start : start + frames]
        scale, offset = units.affine
        if width != 0:  # as scale_to_unit: low == high only subtracts low
            scale, offset = scale / width, (offset - low) / width
        else:
            offset -= low
        part *= np.float32(scale)
        part += np.float32(offset)
        start += frames
    return np.clip(taps, 0.0, 1.0, out=taps)


def _taps_stats(images: list[ReducedImage]) -> IntensityStats:
    """QC statistics of images that are measured but not windowed (e.g. unlabelled)."""
    stats = IntensityStats()
    kept: list[DecodedImage] = []
    for image in images:
        if isinstance(image, MeasuredImage):  # measured as read (pixels not kept)
            stats.merge(image.stats)
        elif isinstance(image, DecodedImage):
            kept.append(image)
    if kept:
        taps = np.concatenate([i.taps.reshape(i.frames, -1) for i in kept], dtype=np.float32)
        _measure_runs(stats, taps, kept)
    return stats


def normalise_and_resample(
    images: list[DecodedImage], window: str, stats: IntensityStats | None = None
) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Images [size, size] in [0, 1] from the taps of one series' files (in slice order).

    Returns them with the values mapped to 0 and 1 (the window, or the series' percentiles).
    Adds the QC statistics of their taps to ``stats`` when given. ``prepare`` and ``medfed
    predict`` both normalise a series with this function, so that they agree exactly.
    """
    stats = stats if stats is not None else IntensityStats()
    low, high, measured = _window_bounds(images, window)
    if measured is not None:
        stats.merge(measured)
    out: list[np.ndarray] = []
    for plan, group in itertools.groupby(images, lambda i: i.plan):
        scaled = _scaled_taps(list(group), low, high, stats if measured is None else None)
        out.extend(plan.combine(scaled))
    return out, (low, high)


def start_prepared(
    scan: DicomScan, report: QualityReport, segmentations: SegmentationMasks | None
) -> PreparedImages:
    """An empty result for ``scan``, its files and problems recorded in ``report``.

    Without ``segmentations`` (a classification task) each DICOM SEG file is listed as skipped.
    """
    prepared = PreparedImages()
    report.files_seen = scan.files_seen
    for problem in scan.problems:
        report.skip(problem.path.as_posix(), problem.reason)
    if segmentations is None:
        for path in scan.segmentations:
            report.skip(
                path.relative_to(scan.root).as_posix(),
                "DICOM SEG: its masks are read only when preparing a segmentation task",
            )
    else:
        prepared.segment_names = segmentations.segment_names
    return prepared


def prepare_series(
    scan: DicomScan,
    config: PreprocessingConfig,
    manifest: LabelManifest | None,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    keep_pixels: bool = True,
    on_series: Callable[[int, int], None] | None = None,
    segmentations: SegmentationMasks | None = None,
) -> PreparedImages:
    """Normalise and resample every labelled image of every series; record quality facts.

    ``scan`` comes from :func:`read_dicom_folder` (same ``config`` and ``keep_pixels``), so
    files whose pixels could not be decoded are already among its problems, with the reason.
    An image whose size differs from the first of its series is listed and skipped. With
    ``keep_pixels=False`` (``medfed-site check``) images are measured, not kept.
    With ``segmentations`` (the site's DICOM SEG masks) an image is labelled by its mask: the
    mask is resampled onto the image's output grid and kept beside it, and the label says
    whether it holds any foreground; images no SEG object covers are unlabelled.
    """
    prepared = start_prepared(scan, report, segmentations)
    for done, series in enumerate(scan.series.values(), start=1):
        if on_series is not None:
            on_series(done, len(scan.series))
        modality = series.modality
        report.count_series(modality)
        stats = report.intensity.setdefault(modality, IntensityStats())
        key = pseudonymise(series.series_uid)
        _check_spacing(series, key, report)
        slice_index = 0
        labels: list[int] = []
        slice_indices: list[int] = []
        kept: list[DecodedImage] = []
        unwindowed: list[ReducedImage] = []  # measured for QC but not kept (unlabelled, check)
        kept_masks: list[np.ndarray] = []
        reference: tuple[int, int] | None = None
        series_label = None  # one lookup per series unless labels are per file (Path is slow)
        if manifest is not None and not manifest.keyed_by_file:
            series_label = manifest.series_label(series.series_uid, series.study_uid)
        for header in series.slices:
            image = header.image
            if image is None:
                raise ValueError("prepare_series needs a scan from read_dicom_folder")
            reference = reference or image.shape
            if image.shape != reference:
                relative = header.path.relative_to(scan.root).as_posix()
                report.skip(relative, "image size differs from the rest of its series")
                continue
            mask = None
            if segmentations is not None:
                mask = segmentations.by_source.get(header.sop_instance_uid)
                if mask is not None and (image.frames != 1 or mask.shape != image.shape):
                    relative = header.path.relative_to(scan.root).as_posix()
                    report.skip(relative, "DICOM SEG mask does not fit this image")
                    continue
            report.count_images(modality, image.frames)
            if segmentations is not None:
                label = None if mask is None else int(mask.any())
            elif manifest is not None and manifest.keyed_by_file:
                label = manifest.label_for(
                    header.path.relative_to(scan.root), series.series_uid, series.study_uid
                )
            else:
                label = series_label
            first, slice_index = slice_index, slice_index + image.frames
            if label is None or not keep_pixels:
                unwindowed.append(image)
            if label is None:
                report.unlabelled_images += image.frames
                continue
            if keep_pixels:
                if not isinstance(image, DecodedImage):
                    raise ValueError("prepare_series keeping pixels needs a scan that kept them")
                kept.append(image)
                if mask is not None:
                    kept_masks.append(mask)
            labels.extend([label] * image.frames)
            slice_indices.extend(range(first, slice_index))
        stats.merge(_taps_stats(unwindowed))
        images = None
        if kept:
            images, _ = normalise_and_resample(kept, config.window_for(modality), stats)
        masks = None
        if kept_masks:  # nearest neighbour onto the grid the images were resampled to
            masks = resample_masks(
                np.stack(kept_masks), series.pixel_spacing, config.target_spacing, config.size
            )
        patient = patient_identity(series)  # split by patient: none in two splits
        prepared.add_series(
            labels,
            slice_indices,
            key,
            pseudonymise(series.study_uid),
            split_key_of(patient),
            images,
            masks,
            patient_key=pseudonymise(patient),
        )
        if not labels:
            report.unlabelled_series += 1
    if manifest is not None:
        report.count_classes(prepared.labels, manifest.class_names)
    elif segmentations is not None:
        report.count_classes(prepared.labels, mask_classes(prepared.segment_names))
    logger.debug(
        "prepared %d labelled images from %d series", len(prepared.labels), len(scan.series)
    )
    return prepared
