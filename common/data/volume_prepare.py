"""`prepare --dims 3`: each series (DICOM) or case (NIfTI) becomes one labelled volume.

DICOM series go through the 2D pipeline first (decode, window, in-plane resampling, masks from
DICOM SEG), so both agree on intensities; their slices are then stacked and resampled along
every axis to isotropic spacing (common.data.volumes). A volume is labelled ``lesion`` when its
mask holds any foreground.
"""

import logging
from collections.abc import Callable

import numpy as np
from monai.transforms import LoadImage

from common.data.arrays import mask_classes
from common.data.dicom_geometry import dicom_affine
from common.data.dicom_prepare import PreparedImages, PreprocessingConfig, split_key_of
from common.data.dicom_scan import DicomScan, SeriesFiles
from common.data.intensity import normalise_intensity
from common.data.nifti_cases import NiftiCase
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.volumes import Volume, prepared_slices_affine, resample_volume

__all__ = [
    "nifti_volume",
    "prepare_nifti_volumes",
    "read_volume_case",
    "series_volume",
    "stack_series_volumes",
]

logger = logging.getLogger(__name__)

_MODALITY = "NIfTI"


def _add_volume(
    volumes: PreparedImages,
    volume: Volume,
    keys: tuple[str, str, str, str],
) -> None:
    series_key, study_key, split_key, patient_key = keys
    if volume.mask is None:
        raise ValueError("a volume needs its mask")
    volumes.add_series(
        [int(volume.mask.any())],
        [0],
        series_key,
        study_key,
        split_key,
        [volume.image],
        volume.mask[None],
        patient_key=patient_key,
    )
    volumes.affines.append(volume.affine)


def series_volume(
    slices: np.ndarray,
    masks: np.ndarray | None,
    source_affine: np.ndarray,
    source_shape: tuple[int, int],
    pixel_spacing: tuple[float, float] | None,
    config: PreprocessingConfig,
) -> Volume:
    """A series' 2D-prepared slices [Z, size, size] (and masks) as one volume.

    ``source_affine`` indexes the source slices (column, row, slice), of ``source_shape``
    (rows, columns) and ``pixel_spacing`` (row, column) mm. ``prepare`` and ``medfed predict``
    both build a DICOM volume with this function.
    """
    affine = prepared_slices_affine(
        source_affine, source_shape, pixel_spacing, config.target_spacing, config.size
    )
    # [Z, Y, X] slices -> [X, Y, Z], the order the affine indexes
    image = slices.transpose(2, 1, 0)
    mask = None if masks is None else masks.transpose(2, 1, 0)
    return resample_volume(image, mask, affine, config.target_spacing, config.size)


def _series_problem(series: SeriesFiles, rows: list[int], slices: list[int]) -> str | None:
    """Why a series cannot be stacked into a volume, or None."""
    if not rows:
        return None  # unlabelled: already counted by the 2D pipeline
    if any(header.image is None or header.image.frames != 1 for header in series.slices):
        return "3D: multi-frame or undecoded files (one file per slice needed)"
    if slices != list(range(len(series.slices))):
        return "3D: not every slice of the series is labelled by a mask (gaps in the volume)"
    if series.pixel_spacing is None or dicom_affine(series.slices) is None:
        return "3D: no slice geometry (ImagePositionPatient/ImageOrientationPatient/PixelSpacing)"
    return None


def stack_series_volumes(
    scan: DicomScan,
    slices: PreparedImages,
    config: PreprocessingConfig,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
) -> PreparedImages:
    """One volume per series of ``slices`` (what ``prepare_series`` made of ``scan``).

    A series that cannot be a volume (slices missing, multi-frame files, no geometry) is listed
    in ``report`` with the reason and left out.
    """
    volumes = PreparedImages(segment_names=slices.segment_names)
    by_series: dict[str, list[int]] = {}
    for index, key in enumerate(slices.series_keys):
        by_series.setdefault(key, []).append(index)
    for series in scan.series.values():
        key = pseudonymise(series.series_uid)
        rows = by_series.get(key, [])
        problem = _series_problem(series, rows, [slices.slice_indices[i] for i in rows])
        if problem is not None:
            report.skip(f"series {key}", problem)
        if problem is not None or not rows:
            continue
        first = series.slices[0].image
        source_affine = dicom_affine(series.slices)
        assert first is not None and source_affine is not None  # checked by _series_problem
        volume = series_volume(
            np.stack([slices.images[i] for i in rows]),
            np.stack([slices.masks[i] for i in rows]),
            source_affine,
            first.shape,
            series.pixel_spacing,
            config,
        )
        i = rows[0]
        keys = (key, slices.study_keys[i], slices.split_keys[i], slices.patient_keys[i])
        _add_volume(volumes, volume, keys)
    report.count_classes(volumes.labels, mask_classes(volumes.segment_names))
    logger.info("stacked %d volumes from %d series", len(volumes.labels), len(scan.series))
    return volumes


def read_volume_case(case: NiftiCase) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image [X, Y, Z] (first channel), mask or None, and the image's affine (MONAI reader)."""
    loader = LoadImage(reader="NibabelReader", image_only=True)
    image = loader(case.image)
    volume = np.asarray(image, dtype=np.float32)
    volume = volume[..., 0] if volume.ndim == 4 else volume
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    mask = None
    if case.mask is not None:
        mask = np.asarray(loader(case.mask))
        mask = mask[..., 0] if mask.ndim == 4 else mask
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image {volume.shape}")
    return volume, mask, np.asarray(image.affine, dtype=np.float64)


def nifti_volume(
    image: np.ndarray, mask: np.ndarray | None, affine: np.ndarray, config: PreprocessingConfig
) -> Volume:
    """A NIfTI image [X, Y, Z] (and mask) normalised over the whole volume, then resampled.

    ``prepare`` and ``medfed predict`` both build a NIfTI volume with this function.
    """
    normalised = normalise_intensity(image, config.window_for(_MODALITY))
    return resample_volume(normalised, mask, affine, config.target_spacing, config.size)


def prepare_nifti_volumes(
    cases: list[NiftiCase],
    config: PreprocessingConfig,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    on_case: Callable[[int, int], None] | None = None,
    segment_names: tuple[str, ...] | None = None,
) -> PreparedImages:
    """Each NIfTI case with a mask as one normalised, resampled volume with its affine.

    Percentile scaling (or the window) runs over the whole volume, as for 2D slices. A case
    that cannot be read is listed in the report with the reason and skipped; a case without a
    mask is counted as unlabelled.
    """
    prepared = PreparedImages(segment_names=segment_names)
    report.files_seen = len(cases)
    stats = report.intensity.setdefault(_MODALITY, IntensityStats())
    for done, case in enumerate(cases, start=1):
        if on_case is not None:
            on_case(done, len(cases))
        try:
            volume, mask, affine = read_volume_case(case)
        except Exception as exc:  # nibabel and MONAI raise many types on damaged files
            report.skip(case.image.name, f"not readable as a NIfTI volume ({type(exc).__name__})")
            continue
        report.count_series(_MODALITY)
        report.count_images(_MODALITY, volume.shape[2])
        stats.add(volume)
        if mask is None:
            report.unlabelled_images += volume.shape[2]
            report.unlabelled_series += 1
            continue
        resampled = nifti_volume(volume, mask.astype(np.uint8), affine, config)
        key = pseudonymise(case.case_id)
        _add_volume(prepared, resampled, (key, key, split_key_of(case.case_id), key))
    report.count_classes(prepared.labels, mask_classes(segment_names))
    logger.info("prepared %d volumes from %d NIfTI cases", len(prepared.labels), len(cases))
    return prepared
