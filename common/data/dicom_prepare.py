"""Turn a folder of DICOM files into preprocessed, labelled 2D images, ready to cache."""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.data.arrays import MASK_CLASSES
from common.data.dicom_pixels import decode_frames
from common.data.dicom_scan import DicomScan, SeriesFiles
from common.data.dicom_seg import SegmentationMasks
from common.data.intensity import normalise_intensity
from common.data.label_manifest import LabelManifest
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.resampling import resample_images, resample_masks

__all__ = ["PreparedImages", "PreprocessingConfig", "prepare_series"]

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

    def window_for(self, modality: str) -> str:
        """The normalisation used for one modality."""
        if self.window != "auto":
            return self.window
        return self.ct_window if modality == "CT" else "percentile"


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
    #: Label maps [size, size] (uint8 class per pixel), for segmentation data only.
    masks: list[np.ndarray] = field(default_factory=list)
    segment_names: tuple[str, ...] | None = None

    def add_series(
        self,
        labels: list[int],
        slice_indices: list[int],
        series_key: str,
        study_key: str,
        split_key: str,
        images: np.ndarray | None,
        masks: np.ndarray | None = None,
    ) -> None:
        """Append one series' labelled images (``images`` None when pixels are not kept)."""
        self.labels.extend(labels)
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


def _first_sentence(exc: Exception) -> str:
    """Short reason from a pixel decoding error (structural: sizes, syntaxes, never tag values)."""
    text = str(exc).split(" - ")[0].split("\n")[0].strip()
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _check_spacing(series: SeriesFiles, key: str, report: QualityReport) -> None:
    gaps = series.slice_gaps()
    if gaps.size >= 2 and (gaps.max() - gaps.min()) > _GAP_TOLERANCE * max(abs(gaps.mean()), 1e-6):
        report.inconsistent_spacing.append(
            {"series": key, "min_gap_mm": float(gaps.min()), "max_gap_mm": float(gaps.max())}
        )


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
    """Decode, normalise and resample every image of every series; record quality facts.

    An image that cannot be decoded (truncated, unsupported compression) is listed in the
    report with the reason and skipped; the rest of its series is still used. With
    ``keep_pixels=False`` (``medfed-site check``) images are decoded and measured, not kept.
    With ``segmentations`` (the site's DICOM SEG masks) an image is labelled by its mask:
    the mask is kept beside it and the label says whether it holds any foreground; images no
    SEG object covers are unlabelled.
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
        kept: list[np.ndarray] = []
        kept_masks: list[np.ndarray] = []
        for header in series.slices:
            relative = header.path.relative_to(scan.root)
            try:
                frames = decode_frames(header.path)
            except Exception as exc:  # pydicom and its plugins raise many types
                report.skip(
                    relative.as_posix(), f"pixel data not decodable: {_first_sentence(exc)}"
                )
                continue
            label = (
                manifest.label_for(relative, series.series_uid, series.study_uid)
                if manifest is not None
                else None
            )
            if kept and frames.shape[1:] != kept[0].shape:
                report.skip(relative.as_posix(), "image size differs from the rest of its series")
                continue
            mask = None
            if segmentations is not None:
                mask = segmentations.by_source.get(header.sop_instance_uid)
                if mask is not None and (len(frames) != 1 or mask.shape != frames.shape[1:]):
                    report.skip(relative.as_posix(), "DICOM SEG mask does not fit this image")
                    continue
                label = None if mask is None else int(mask.any())
            for frame in frames:
                stats.add(frame)
                report.count_images(modality, 1)
                slice_index += 1
                if label is None:
                    report.unlabelled_images += 1
                    continue
                if keep_pixels:
                    kept.append(frame)
                    if mask is not None:
                        kept_masks.append(mask)
                labels.append(label)
                slice_indices.append(slice_index - 1)
        images = masks = None
        if kept:  # one normalisation and one resampling call per series
            stack = normalise_intensity(np.stack(kept), config.window_for(modality))
            images = resample_images(
                stack, series.pixel_spacing, config.target_spacing, config.size
            )
        if kept_masks:
            masks = resample_masks(
                np.stack(kept_masks), series.pixel_spacing, config.target_spacing, config.size
            )
        prepared.add_series(
            labels,
            slice_indices,
            key,
            pseudonymise(series.study_uid),
            split_key_of(series.study_uid),
            images,
            masks,
        )
        if not labels:
            report.unlabelled_series += 1
    if manifest is not None:
        report.count_classes(prepared.labels, manifest.class_names)
    elif segmentations is not None:
        report.count_classes(prepared.labels, MASK_CLASSES)
    logger.info(
        "prepared %d labelled images from %d series", len(prepared.labels), len(scan.series)
    )
    return prepared
