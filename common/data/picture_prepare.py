"""Turn 2D image cases (pictures or 2D NIfTI, with masks) into preprocessed, labelled images."""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data.arrays import DEFAULT_SEGMENT_NAMES, mask_classes
from common.data.colour import apply_channel_rule
from common.data.dicom_prepare import PreparedImages, PreprocessingConfig, split_key_of
from common.data.dicom_problems import error_text
from common.data.intensity import normalise_intensity
from common.data.label_manifest import LabelManifest
from common.data.picture_cases import Picture, PictureCase, read_mask, read_picture_file
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.resampling import resample_images, resample_masks
from common.errors import ConfigError, DataFormatError

__all__ = ["modality_of", "preprocess_picture", "prepare_picture_cases"]

logger = logging.getLogger(__name__)


def modality_of(picture: Picture) -> str:
    """The report's modality name: ``picture`` (PNG, JPEG, ...) or ``NIfTI``."""
    return "picture" if picture.full_scale is not None else "NIfTI"


def preprocess_picture(
    picture: Picture, config: PreprocessingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One image as [C, H, W] in [0, 1] at its own size, and [C, size, size] for the model.

    ``config.channels`` picks the channels (common.data.colour). Under window 'auto' a picture
    is scaled by its bit depth (255 or 65535) and a NIfTI by percentiles; any other window
    applies to both. ``prepare`` and ``medfed predict`` both preprocess 2D images here.

    Raises:
        ConfigError: ``--spacing`` is asked of a picture, which stores no pixel spacing.
    """
    channels = apply_channel_rule(picture.pixels, config.channels)
    window = config.window_for(modality_of(picture))
    if config.window == "auto" and picture.full_scale is not None:
        display = np.clip(channels / np.float32(picture.full_scale), 0.0, 1.0)
    else:
        display = normalise_intensity(channels, window)
    if config.target_spacing is not None and picture.spacing is None:
        raise ConfigError(
            "--spacing", "pictures store no pixel spacing: prepare them without --spacing"
        )
    model = resample_images(display, picture.spacing, config.target_spacing, config.size)
    return display.astype(np.float32), model


def _case_label(
    case: PictureCase, mask: np.ndarray | None, manifest: LabelManifest | None
) -> int | None:
    if manifest is not None:
        return manifest.label_for(Path(case.name), "", "")
    return None if mask is None else int(mask.any())


def prepare_picture_cases(
    cases: list[PictureCase],
    config: PreprocessingConfig,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    manifest: LabelManifest | None = None,
    keep_pixels: bool = True,
    on_case: Callable[[int, int], None] | None = None,
    segment_names: tuple[str, ...] = DEFAULT_SEGMENT_NAMES,
) -> PreparedImages:
    """Every case as one image, each its own patient (the split is by case).

    Labelled by ``manifest`` (classification, a labels CSV keyed by file) when given, else by
    its mask: class 1 when it holds any foreground. The mask, resampled by nearest neighbour
    onto the image's grid, is kept beside each image (segmentation data); a case without a
    mask is unlabelled then. A case that cannot be read is listed in the report with the
    full reason.
    """
    prepared = PreparedImages(segment_names=segment_names if manifest is None else None)
    report.files_seen = len(cases) + sum(case.mask is not None for case in cases)
    for done, case in enumerate(cases, start=1):
        if on_case is not None:
            on_case(done, len(cases))
        try:
            picture = read_picture_file(case.image)
        except DataFormatError as exc:
            report.skip(case.name, exc.reason)
            continue
        except Exception as exc:  # Pillow and nibabel raise many types on damaged files
            logger.debug("reading %s failed", case.name, exc_info=True)
            report.skip(case.name, f"damaged: image not readable ({error_text(exc)})")
            continue
        modality = modality_of(picture)
        mask = None
        if case.mask is not None and manifest is None:
            try:
                mask = read_mask(case.mask, picture.pixels.shape[:2], len(segment_names))
            except DataFormatError as exc:
                report.skip(case.name, f"mask not usable: {exc.reason}")
                continue
            except Exception as exc:  # Pillow and nibabel raise many types on damaged files
                logger.debug("reading the mask of %s failed", case.name, exc_info=True)
                report.skip(case.name, f"damaged: mask not readable ({error_text(exc)})")
                continue
        report.count_series(modality)
        report.count_images(modality, 1)
        report.intensity.setdefault(modality, IntensityStats()).add(picture.pixels)
        label = _case_label(case, mask, manifest)
        if label is None or (manifest is None and mask is None):
            report.unlabelled_images += 1
            report.unlabelled_series += 1
            continue
        images = masks = None
        if keep_pixels:
            _, model = preprocess_picture(picture, config)
            images = [model if len(model) > 1 else model[0]]  # [C, H, W]: cached channels last
            if mask is not None and manifest is None:
                masks = resample_masks(
                    mask[None], picture.spacing, config.target_spacing, config.size
                )
        key = pseudonymise(case.case_id)
        prepared.add_series(
            [label], [0], key, key, split_key_of(case.case_id), images, masks, patient_key=key
        )
    class_names = manifest.class_names if manifest is not None else mask_classes(segment_names)
    report.count_classes(prepared.labels, class_names)
    logger.debug("prepared %d of %d 2D images", len(prepared.labels), len(cases))
    return prepared
