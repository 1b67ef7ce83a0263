"""`prepare --register` / `--sequences`: 3D series aligned on one grid, then sliced.

Each study (one series, or one series per ``--sequences`` channel) is read as 3D volumes,
aligned (common.data.study_alignment: registered to the atlas or a reference, sequences
co-registered to the first), resampled onto one output grid (masks by nearest neighbour),
windowed per channel, and cut into axial slices of ``size`` x ``size`` pixels with one channel
per sequence. Slices that not every series covers are dropped. A series or study that cannot be
used is named in the QC report with the reason, and nothing else is lost.
"""

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.data.arrays import mask_classes
from common.data.atlas import ATLAS, atlas_image, read_reference
from common.data.dicom_patient import patient_identity
from common.data.dicom_prepare import (
    PreparedImages,
    PreprocessingConfig,
    split_key_of,
    start_prepared,
)
from common.data.dicom_scan import DicomScan, SeriesFiles
from common.data.dicom_seg import SegmentationMasks
from common.data.label_manifest import LabelManifest
from common.data.preprocessing_contract import MissingSequence
from common.data.pseudonyms import SitePseudonymiser
from common.data.quality import IntensityStats, QualityReport
from common.data.registration import Registration, TransformKind
from common.data.sequences import SequenceRule, StudySequences, group_by_sequence
from common.data.series_volume import SeriesVolume, series_volume
from common.data.study_alignment import StudyNotAligned, output_grid
from common.data.study_grid import NoSliceCovered, study_on_grid

__all__ = [
    "MISSING_STATUS",
    "REGISTER_CHOICES",
    "RegistrationOptions",
    "prepare_registered",
    "studies_of",
]

logger = logging.getLogger(__name__)

#: Every value ``--register`` takes.
REGISTER_CHOICES = ("none", ATLAS, "reference")
#: The QC row status of a sequence a study lacks, zero-filled (``--missing-sequence zeros``).
MISSING_STATUS = "missing, zero-filled"
_SINGLE = "image"


@dataclass(frozen=True)
class RegistrationOptions:
    """What ``prepare`` aligns to, how, and which series are a study's channels."""

    register: str = "none"
    transform: TransformKind = "affine"
    reference: Path | None = None
    sequences: SequenceRule | None = None
    #: A study lacking a sequence: left out (skip) or its channel filled with zeros.
    missing_sequence: MissingSequence = "skip"
    #: One mask channel per sequence after the images (1 where the study has it); prepare sets
    #: it with ``--missing-sequence zeros``, predict from the model's contract.
    presence_channels: bool = False

    @property
    def channel_names(self) -> tuple[str, ...]:
        """One name per channel (``image`` without ``--sequences``)."""
        return self.sequences.names if self.sequences is not None else (_SINGLE,)

    def contract_value(self) -> str:
        """What the contract records: ``none``, ``atlas:affine``, ``reference:rigid:<sha>``."""
        if self.register == "none":
            return "none"
        if self.register == ATLAS:
            return f"{ATLAS}:{self.transform}"
        digest = (
            hashlib.sha256(self.reference.read_bytes()).hexdigest()[:16] if self.reference else ""
        )
        return f"reference:{self.transform}:{digest}"

    def reference_image(self) -> sitk.Image | None:
        """The volume to register to, or None (``--register none``)."""
        if self.register == ATLAS:
            return atlas_image()
        if self.register == "reference" and self.reference is not None:
            return read_reference(self.reference)
        return None


def studies_of(series: Iterable[SeriesFiles], options: RegistrationOptions) -> list[StudySequences]:
    """The studies to align: grouped by ``--sequences``, or each series on its own."""
    if options.sequences is not None:
        return group_by_sequence(series, options.sequences)
    return [StudySequences(s.series_uid, {_SINGLE: [s]}) for s in series]


@dataclass
class _Context:
    config: PreprocessingConfig
    options: RegistrationOptions
    manifest: LabelManifest | None
    pseudonymise: SitePseudonymiser
    report: QualityReport
    segmentations: SegmentationMasks | None
    reference: sitk.Image | None
    grid: sitk.Image | None
    #: Classification labelled by the SEG masks: the least foreground area (mm^2) of a
    #: positive slice; None when the masks are the targets (segmentation).
    label_min_area: float | None = None


def _row(key: str, name: str, image: sitk.Image, first: sitk.Image) -> dict[str, object]:
    row: dict[str, object] = {
        "series": key,
        "sequence": name,
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 3) for s in image.GetSpacing()],
    }
    if image.GetSize() != first.GetSize() or image.GetSpacing() != first.GetSpacing():
        row["note"] = "size or spacing differs from the first sequence: resampled onto the grid"
    return row


def _prepare_study(study: StudySequences, context: _Context, prepared: PreparedImages) -> None:
    report, key_of = context.report, context.pseudonymise
    options = context.options
    names = options.channel_names
    study_key = key_of(study.study_uid)
    for series in study.unmatched:
        report.exclude(key_of(series.series_uid), "series matches no --sequences rule")
    problem = study.problem(names, zero_fill=options.missing_sequence == "zeros")
    if problem:
        report.exclude(study_key, problem)
        return
    chosen = [study.series[n][0] if study.series.get(n) else None for n in names]
    present = [(i, s) for i, s in enumerate(chosen) if s is not None]
    masks = context.segmentations.by_source if context.segmentations is not None else None
    volumes: list[SeriesVolume | None] = [None] * len(names)
    for index, series in present:
        try:
            volumes[index] = series_volume(series, masks)
        except ValueError as exc:
            name = names[index]
            report.exclude(study_key, f"series {key_of(series.series_uid)} ({name}): {exc}")
            return
    anchor = present[0][1]
    images = [v.image for v in volumes if v is not None]
    rows: list[dict[str, object]] = [
        _row(key_of(series.series_uid), names[index], image, images[0])
        for (index, series), image in zip(present, images, strict=True)
    ]
    modality = anchor.modality
    stats = IntensityStats()
    try:
        placed = study_on_grid(
            volumes, context.config.window_for(modality), context.config.target_spacing,
            context.config.size, context.reference, context.grid, options.transform, stats,
            presence=options.presence_channels,
        )  # fmt: skip
    except StudyNotAligned as exc:
        for row, alignment in zip(rows, exc.done, strict=False):
            if alignment.registration is not None:
                row.update(_metrics(alignment.registration))
        rows[exc.index].update(status="failed", reason=exc.reason)
        report.registration.extend(rows)
        report.exclude(study_key, f"series {rows[exc.index]['series']} "
                                  f"({rows[exc.index]['sequence']}): {exc.reason}")  # fmt: skip
        return
    except NoSliceCovered as exc:
        report.registration.extend(rows)
        report.exclude(study_key, str(exc))
        return
    for row, alignment in zip(rows, placed.alignments, strict=True):
        row["status"] = "registered" if alignment.registration is not None else "not registered"
        row["to"] = alignment.target
        if alignment.registration is not None:
            row.update(_metrics(alignment.registration))
    report.registration.extend(rows)
    report.intensity.setdefault(modality, IntensityStats()).merge(stats)
    for name in study.missing(names):
        report.registration.append(
            {"study": study_key, "sequence": name, "status": MISSING_STATUS,
             "reason": "no series matches it: channel filled with zeros (--missing-sequence zeros)"}
        )  # fmt: skip
    kept, scaled = placed.kept, placed.channels
    for _, series in present:
        report.count_series(series.modality)
    report.count_images(modality, int(kept.size))
    if context.segmentations is not None:
        if placed.mask is None:
            report.exclude(study_key, "no DICOM SEG mask covers its series")
            report.unlabelled_images += int(kept.size)
            return
        kept_masks = placed.mask[kept]
        labels = [int(m.any()) for m in kept_masks]
        if context.label_min_area is not None:
            sliver = _slivers(kept_masks, placed.grid, context.label_min_area)
            report.unlabelled_images += int(sliver.sum())
            labelled = np.flatnonzero(~sliver)
            kept, scaled = kept[labelled], scaled[labelled]
            labels, kept_masks = [labels[i] for i in labelled], None
    else:
        series_label = None
        if context.manifest is not None:
            series_label = context.manifest.series_label(anchor.series_uid, study.study_uid)
        if series_label is None:
            report.unlabelled_images += int(kept.size)
            report.unlabelled_series += 1
            return
        labels, kept_masks = [series_label] * int(kept.size), None
    patient = patient_identity(anchor)
    images_out = list(scaled[:, 0]) if scaled.shape[1] == 1 else list(scaled)
    prepared.add_series(
        labels,
        [int(k) for k in kept],
        key_of(anchor.series_uid),
        study_key,
        split_key_of(patient),
        images_out,
        kept_masks,
        patient_key=key_of(patient),
    )


def _slivers(masks: np.ndarray, grid: sitk.Image, min_area_mm2: float) -> np.ndarray:
    """Slices ([K, H, W] masks on ``grid``) with some foreground, but less than the area."""
    spacing = grid.GetSpacing()
    pixels = masks.reshape(len(masks), -1).astype(bool).sum(1)
    return (pixels > 0) & (pixels * spacing[0] * spacing[1] < min_area_mm2)


def _metrics(registration: Registration) -> dict[str, float]:
    """Mattes mutual information before and after (lower is better), and the time taken."""
    return {
        "metric_before": round(registration.metric_before, 4),
        "metric_after": round(registration.metric_after, 4),
        "seconds": round(registration.seconds, 2),
    }


def prepare_registered(
    scan: DicomScan,
    config: PreprocessingConfig,
    options: RegistrationOptions,
    manifest: LabelManifest | None,
    pseudonymise: SitePseudonymiser,
    report: QualityReport,
    segmentations: SegmentationMasks | None = None,
    on_study: Callable[[int, int], None] | None = None,
    label_min_area: float | None = None,
) -> PreparedImages:
    """Align, resample, window and slice every study of ``scan`` (read with VolumeReader).

    With ``segmentations`` each slice keeps its mask (segmentation), unless
    ``label_min_area`` is given (classification labelled by the masks): then a slice is
    positive when its mask covers at least that many mm^2 on the output grid, negative when it
    covers none, and left out as unlabelled (a sliver) in between; no mask is kept.
    """
    prepared = start_prepared(scan, report, segmentations)
    reference = options.reference_image()
    grid = None
    if reference is not None:
        grid = output_grid(reference, config.target_spacing, config.size)
    context = _Context(
        config, options, manifest, pseudonymise, report, segmentations, reference, grid,
        label_min_area,
    )  # fmt: skip
    studies = studies_of(scan.series.values(), options)
    for done, study in enumerate(studies, start=1):
        _prepare_study(study, context, prepared)
        if on_study is not None:
            on_study(done, len(studies))
    if manifest is not None:
        report.count_classes(prepared.labels, manifest.class_names)
    elif segmentations is not None:
        report.count_classes(prepared.labels, mask_classes(prepared.segment_names))
    return prepared
