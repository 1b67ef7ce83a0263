"""Registered or multi-sequence DICOM studies, prepared for ``medfed predict`` as prepare did.

Each study is grouped by the sequence rule, aligned (atlas or reference registration,
co-registration to the first sequence) and resampled, windowed and sliced by the same function
prepare uses (common.data.study_grid), so that a training study gives the network the cached
tensor. Predicted masks go back onto the anchor series' own slices (the first sequence
present) through the inverse of its alignment, by nearest neighbour.
"""

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from client.inference.geometry import dicom_affine
from client.inference.inputs import PreparedInput
from client.inference.sources import Skipped, Source
from common.data.dicom_prepare import PreprocessingConfig
from common.data.dicom_scan import SeriesFiles, scan_dicom_folder
from common.data.intensity import scale_to_unit, window_range
from common.data.registered_prepare import RegistrationOptions, studies_of
from common.data.series_volume import SeriesVolume, VolumeReader, series_volume
from common.data.study_alignment import StudyNotAligned, output_grid
from common.data.study_grid import NoSliceCovered, StudyGrid, study_on_grid

__all__ = ["StudyInput", "read_studies"]

logger = logging.getLogger(__name__)


@dataclass
class StudyInput:
    """One study prepared for the network, and how its masks go back onto its anchor series."""

    item: PreparedInput
    placed: StudyGrid
    anchor: sitk.Image

    def to_source(self, masks: np.ndarray) -> np.ndarray:
        """Masks of the kept grid slices [K, s, s] -> the anchor's [slices, rows, cols]."""
        grid = self.placed.grid
        full = np.zeros(sitk.GetArrayViewFromImage(grid).shape, dtype=np.uint8)
        full[self.placed.kept] = masks
        on_grid = sitk.GetImageFromArray(full)
        on_grid.CopyInformation(grid)
        back = self.placed.alignments[0].transform.GetInverse()
        moved = sitk.Resample(
            on_grid, self.anchor, back, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8
        )
        return sitk.GetArrayFromImage(moved)


def _display(image: sitk.Image) -> np.ndarray:
    """The anchor series in [0, 1] by its own percentiles, [slices, rows, cols] (overlays)."""
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    return scale_to_unit(values, *window_range("percentile", values))


def _study_name(chosen: list[SeriesFiles], root: Path) -> str:
    """The folder holding the study's series, relative to ``--input``."""
    common = Path(os.path.commonpath([s.slices[0].path.parent for s in chosen]))
    relative = common.relative_to(root).as_posix() if common.is_relative_to(root) else ""
    return relative if relative not in ("", ".") else root.name


def read_studies(
    sources: list[Source],
    root: Path,
    config: PreprocessingConfig,
    options: RegistrationOptions,
    segmentation: bool,
) -> Iterator[StudyInput | Skipped]:
    """Each study among the DICOM ``sources``, aligned as prepare aligned, or why it is not.

    The series are read whole again (registration needs every voxel).
    """
    for single in (s for s in sources if s.series is None):  # a DICOM file given on its own
        yield Skipped(single.name, "one file: this model aligns whole series (give their folder)")
    wanted = {s.series.series_uid for s in sources if s.series is not None}
    scan = scan_dicom_folder(root, read_image=VolumeReader())
    series = [s for uid, s in scan.series.items() if uid in wanted]
    reference = options.reference_image()
    grid = output_grid(reference, config.target_spacing, config.size) if reference else None
    names = options.channel_names
    for study in studies_of(series, options):
        every = [s for n in names for s in study.series.get(n, [])] + study.unmatched
        name = _study_name(every, root)
        for lone in study.unmatched:
            yield Skipped(_study_name([lone], root), "series matches no --sequences rule")
        problem = study.problem(names, zero_fill=options.missing_sequence == "zeros")
        if problem:
            yield Skipped(name, problem)
            continue
        chosen = [study.series[n][0] if study.series.get(n) else None for n in names]
        try:
            volumes: list[SeriesVolume | None] = [
                series_volume(s, None) if s is not None else None for s in chosen
            ]
        except ValueError as exc:
            yield Skipped(name, str(exc))
            continue
        present = [i for i, s in enumerate(chosen) if s is not None]
        anchor = next(s for s in chosen if s is not None)
        anchor_volume = next(v for v in volumes if v is not None)
        try:
            placed = study_on_grid(
                volumes, config.window_for(anchor.modality), config.target_spacing,
                config.size, reference, grid, options.transform,
                presence=options.presence_channels,
            )  # fmt: skip
        except StudyNotAligned as exc:
            yield Skipped(name, f"{names[present[exc.index]]}: {exc.reason}")
            continue
        except NoSliceCovered as exc:
            yield Skipped(name, str(exc))
            continue
        files = [h.path for h in anchor.slices]
        kept = [int(k) for k in placed.kept]
        item = PreparedInput(
            Source(name, "dicom", tuple(files), anchor),
            _display(anchor_volume.image)
            if segmentation
            else placed.channels[:, placed.present[0]],
            placed.channels,
            image_files=[name] * len(kept),
            image_frames=kept,
            dicom_files=files,
            spacing=anchor.pixel_spacing if segmentation else None,
            affine=dicom_affine(anchor.slices),
        )
        study_input = StudyInput(item, placed, anchor_volume.image)
        item.to_source = study_input.to_source
        yield study_input
