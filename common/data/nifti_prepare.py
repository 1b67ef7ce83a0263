"""Turn NIfTI cases with masks into preprocessed 2D slices labelled by their masks."""

import logging
from collections.abc import Callable

import numpy as np

from common.data.arrays import DEFAULT_SEGMENT_NAMES, mask_classes
from common.data.dicom_prepare import PreparedImages, PreprocessingConfig, split_key_of
from common.data.intensity import normalise_intensity
from common.data.nifti_cases import NiftiCase, read_nifti_case
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.resampling import resample_images, resample_masks
from common.errors import DataFormatError

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


def _channels_of(
    volume: np.ndarray, spacing: tuple[float, float], config: PreprocessingConfig
) -> np.ndarray:
    """[C, N, H, W] -> [N, size, size] for one channel, [N, C, size, size] for several.

    Each channel is scaled on its own (its own percentiles), as each MR sequence has its own
    intensities.
    """
    channels = [normalise_and_resample_volume(c, spacing, config)[1] for c in volume]
    return channels[0] if len(channels) == 1 else np.stack(channels, axis=1)


def prepare_nifti_cases(
    cases: list[NiftiCase],
    config: PreprocessingConfig,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    min_voxels: int = 1,
    keep_pixels: bool = True,
    on_case: Callable[[int, int], None] | None = None,
    segment_names: tuple[str, ...] = DEFAULT_SEGMENT_NAMES,
    channel_names: Callable[[int], tuple[str, ...]] = lambda channels: (),
) -> PreparedImages:
    """Every axial slice of every case, labelled ``lesion`` when its mask has ``min_voxels``.

    The resampled mask is kept beside each slice (segmentation data); ``segment_names`` names
    its values. Multi-channel (4D) volumes keep every channel, named by ``channel_names``
    (of the channel count); the first readable case sets the count, and a case with another
    count is left out with the reason.

    A case that cannot be read is listed in the report with the reason and skipped; a case
    without a mask is counted as unlabelled.
    """
    prepared = PreparedImages(segment_names=segment_names)
    report.files_seen = len(cases)
    stats = report.intensity.setdefault(_MODALITY, IntensityStats())
    channels = 0
    for done, case in enumerate(cases, start=1):
        if on_case is not None:
            on_case(done, len(cases))
        try:
            volume, mask, spacing = read_nifti_case(case)
        except Exception as exc:  # nibabel and MONAI raise many types on damaged files
            reason = exc.reason if isinstance(exc, DataFormatError) else type(exc).__name__
            report.skip(case.image.name, f"not readable as NIfTI ({reason})")
            continue
        if channels and volume.shape[0] != channels:
            report.skip(
                case.image.name, f"{volume.shape[0]} channels, the first case has {channels}"
            )
            continue
        channels = volume.shape[0]
        slices = volume.shape[1]
        report.count_series(_MODALITY)
        report.count_images(_MODALITY, slices)
        stats.add(volume)
        if mask is None:
            report.unlabelled_images += slices
            report.unlabelled_series += 1
            continue
        labels = ((mask > 0).reshape(slices, -1).sum(axis=1) >= min_voxels).astype(int)
        images = masks = None
        if keep_pixels:
            images = _channels_of(volume, spacing, config)
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
    prepared.channel_names = channel_names(channels) if channels else ()
    report.count_classes(prepared.labels, mask_classes(segment_names))
    logger.info("prepared %d slices from %d NIfTI cases", len(prepared.labels), len(cases))
    return prepared
