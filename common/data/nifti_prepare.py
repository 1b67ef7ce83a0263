"""Turn NIfTI cases with masks into preprocessed 2D slices labelled by their masks."""

import logging
from collections.abc import Callable

import numpy as np

from common.data.arrays import DEFAULT_SEGMENT_NAMES, MASK_CLASSES
from common.data.dicom_prepare import PreparedImages, PreprocessingConfig, split_key_of
from common.data.intensity import normalise_intensity
from common.data.nifti_cases import NiftiCase, read_nifti_case
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.resampling import resample_images, resample_masks

__all__ = ["normalise_and_resample_volume", "prepare_nifti_cases"]

logger = logging.getLogger(__name__)

_MODALITY = "NIfTI"


def normalise_and_resample_volume(
    volume: np.ndarray, spacing: tuple[float, float] | None, config: PreprocessingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """A volume's slices [N, H, W] normalised to [0, 1], and resampled to [N, size, size].

    Percentile scaling runs over the whole volume. ``prepare`` and ``medfed predict`` both
    preprocess a NIfTI volume with this function.
    """
    normalised = normalise_intensity(volume, config.window_for(_MODALITY))
    return normalised, resample_images(normalised, spacing, config.target_spacing, config.size)


def prepare_nifti_cases(
    cases: list[NiftiCase],
    config: PreprocessingConfig,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    min_voxels: int = 1,
    keep_pixels: bool = True,
    on_case: Callable[[int, int], None] | None = None,
    segment_names: tuple[str, ...] = DEFAULT_SEGMENT_NAMES,
) -> PreparedImages:
    """Every axial slice of every case, labelled ``lesion`` when its mask has ``min_voxels``.

    The resampled mask is kept beside each slice (segmentation data); ``segment_names`` names
    its values.

    A case that cannot be read is listed in the report with the reason and skipped; a case
    without a mask is counted as unlabelled.
    """
    prepared = PreparedImages(segment_names=segment_names)
    report.files_seen = len(cases)
    stats = report.intensity.setdefault(_MODALITY, IntensityStats())
    for done, case in enumerate(cases, start=1):
        if on_case is not None:
            on_case(done, len(cases))
        try:
            volume, mask, spacing = read_nifti_case(case)
        except Exception as exc:  # nibabel and MONAI raise many types on damaged files
            report.skip(case.image.name, f"not readable as NIfTI ({type(exc).__name__})")
            continue
        report.count_series(_MODALITY)
        report.count_images(_MODALITY, volume.shape[0])
        stats.add(volume)
        if mask is None:
            report.unlabelled_images += volume.shape[0]
            report.unlabelled_series += 1
            continue
        labels = ((mask > 0).reshape(mask.shape[0], -1).sum(axis=1) >= min_voxels).astype(int)
        images = masks = None
        if keep_pixels:
            _, images = normalise_and_resample_volume(volume, spacing, config)
            masks = resample_masks(mask, spacing, config.target_spacing, config.size)
        key = pseudonymise(case.case_id)
        prepared.add_series(
            labels.tolist(),
            list(range(len(labels))),
            key,
            key,
            split_key_of(case.case_id),
            images,
            masks,
            patient_key=key,  # one case is one patient
        )
    report.count_classes(prepared.labels, MASK_CLASSES)
    logger.info("prepared %d slices from %d NIfTI cases", len(prepared.labels), len(cases))
    return prepared
